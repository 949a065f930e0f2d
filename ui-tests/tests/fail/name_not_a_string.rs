#[netchan::service(name = share_v1)]
pub trait Share {
    async fn list(&self) -> Vec<String>;
}

fn main() {}
