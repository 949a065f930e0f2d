#[netchan::service]
pub trait Share {
    async fn read(&self, client: &str, path: String) -> Vec<u8>;
    async fn write(&self, path: String, data: &[u8]);
    async fn nested(&self, names: Vec<&String>);
}

fn main() {}
