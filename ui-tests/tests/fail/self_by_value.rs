#[netchan::service]
pub trait Share {
    async fn list(self) -> Vec<String>;
}

fn main() {}
