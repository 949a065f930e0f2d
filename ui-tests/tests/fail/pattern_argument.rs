#[netchan::service]
pub trait Share {
    async fn read(&self, (client, path): (String, String)) -> Vec<u8>;
    async fn skip(&self, _: u32);
}

fn main() {}
