#[netchan::service]
pub trait Share {
    async fn list() -> Vec<String>;
}

fn main() {}
