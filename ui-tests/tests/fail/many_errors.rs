// Every problem is reported in one go, each on its own tokens; code that
// uses the generated client and server still resolves them (placeholders),
// so there is no cascade of "cannot find type" errors.
#[netchan::service(version = 2)]
pub trait Share {
    fn list(&self) -> Vec<String>;
    async fn read(&mut self, client: &str) -> Vec<u8>;
    async fn new(&self);
}

struct Files;

fn main() {
    let (a, b) = netchan::Session::pair();
    let _client = ShareClient::new(&b).with_timeout(std::time::Duration::from_secs(1));
    let _server = ShareServer::new(Files);
    drop(a);
}
