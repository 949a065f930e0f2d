#[netchan::service]
pub trait Share {
    async fn publish(&mut self, name: String);
}

fn main() {}
