#[netchan::service]
pub trait Share {
    const LIMIT: usize;
    async fn list(&self) -> Vec<String>;
}

fn main() {}
