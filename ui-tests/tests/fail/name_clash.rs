#[netchan::service]
pub trait Share {
    async fn new(&self);
    async fn named(&self, name: String);
    async fn with_timeout(&self, seconds: u64);
    async fn clone(&self) -> String;
}

fn main() {}
