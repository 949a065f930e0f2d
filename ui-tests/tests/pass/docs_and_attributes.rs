//! Doc comments and attributes on methods carry over: `#[cfg]` reaches every
//! generated item (the disabled method names a type that does not exist),
//! `#[deprecated]` reaches the client method without warnings from the
//! generated dispatcher, and lint attributes apply to the client method.
#![deny(warnings, missing_docs)]

/// A service with annotated methods.
#[netchan::service]
pub trait Annotated {
    /// Adds two numbers.
    ///
    /// Longer docs with a [`link`](std::ops::Add) and a list:
    /// * one
    /// * two
    async fn add(&self, a: i64, b: i64) -> i64;

    /// Old name of `add`.
    #[deprecated = "use `add`"]
    async fn plus(&self, a: i64, b: i64) -> i64;

    /// Only on a platform that does not exist.
    #[cfg(any())]
    async fn missing(&self, x: ThisTypeDoesNotExist) -> AndNeitherDoesThis;

    /// Always there.
    #[cfg(all())]
    #[allow(clippy::too_many_arguments)]
    async fn present(&self, flag: bool) -> bool;

    #[doc = "Written as an attribute."]
    async fn attribute_doc(&self);
}

struct Calculator;

impl Annotated for Calculator {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn plus(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn present(&self, flag: bool) -> bool {
        !flag
    }
    async fn attribute_doc(&self) {}
}

#[allow(deprecated)]
async fn call_deprecated(client: &AnnotatedClient) -> Result<i64, netchan::RpcError> {
    client.plus(1, 2).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (a, b) = netchan::Session::pair();
    a.serve(AnnotatedServer::new(Calculator));
    let client = AnnotatedClient::new(&b);
    // Not awaited: these only have to type-check.
    drop(client.add(1, 2));
    drop(client.present(true));
    drop(client.attribute_doc());
    drop(call_deprecated(&client));
}
