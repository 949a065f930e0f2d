// Attributes on a method carry over to the client method: here
// `#[deprecated]`, denied at the call site.
#![deny(deprecated)]

#[netchan::service]
pub trait Share {
    #[deprecated = "use `list_all`"]
    async fn list(&self) -> Vec<String>;
}

fn main() {
    let (_a, b) = netchan::Session::pair();
    drop(ShareClient::new(&b).list());
}
