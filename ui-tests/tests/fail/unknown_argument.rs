#[netchan::service(name = "share.v1", version = 2)]
pub trait Share {
    async fn list(&self) -> Vec<String>;
}

fn main() {}
