#[netchan::service]
pub trait Share {
    async fn publish(&self, name: impl Into<String>);
}

fn main() {}
