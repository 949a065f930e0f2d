#[netchan::service]
pub trait Share {
    async fn list(&self) -> Vec<String> {
        Vec::new()
    }
}

fn main() {}
