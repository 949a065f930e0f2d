#[netchan::service]
pub trait Share {
    type Item;
    async fn list(&self) -> Vec<String>;
}

fn main() {}
