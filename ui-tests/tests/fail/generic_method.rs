#[netchan::service]
pub trait Share {
    async fn publish<T: serde::Serialize>(&self, item: T);
}

fn main() {}
