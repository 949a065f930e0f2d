//! Every kind of result: unit (written or not), `Result`, `Option`, tuples,
//! nested generics, `'static` borrows-by-name (`Cow<'static, str>`), channel
//! handles, and many arguments.
#![deny(warnings)]

use std::borrow::Cow;
use std::collections::HashMap;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub name: String,
    pub size: u64,
}

#[netchan::service]
pub trait Kinds {
    async fn nothing(&self);
    async fn unit(&self) -> ();
    async fn fallible(&self, path: String) -> Result<Vec<u8>, String>;
    async fn maybe(&self, key: u32) -> Option<Entry>;
    async fn pair(&self) -> (u8, String);
    async fn map(&self) -> HashMap<String, Vec<Entry>>;
    async fn cow(&self, text: Cow<'static, str>) -> Cow<'static, str>;
    async fn stream(&self, n: u32) -> netchan::Receiver<u32>;
    async fn sink(&self, tx: netchan::Sender<String>) -> Result<(), String>;
    async fn many(&self, a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: i32, h: i64) -> u128;
    async fn r#type(&self, r#in: u8) -> u8;
}

struct Impl;

impl Kinds for Impl {
    async fn nothing(&self) {}
    async fn unit(&self) {}
    async fn fallible(&self, path: String) -> Result<Vec<u8>, String> {
        Err(path)
    }
    async fn maybe(&self, key: u32) -> Option<Entry> {
        Some(Entry {
            name: key.to_string(),
            size: 0,
        })
    }
    async fn pair(&self) -> (u8, String) {
        (1, String::new())
    }
    async fn map(&self) -> HashMap<String, Vec<Entry>> {
        HashMap::new()
    }
    async fn cow(&self, text: Cow<'static, str>) -> Cow<'static, str> {
        text
    }
    async fn stream(&self, n: u32) -> netchan::Receiver<u32> {
        let (tx, rx) = netchan::channel(n as usize);
        drop(tx);
        rx
    }
    async fn sink(&self, tx: netchan::Sender<String>) -> Result<(), String> {
        tx.send("hi".to_owned())
            .await
            .map_err(|_| "closed".to_owned())
    }
    #[allow(clippy::too_many_arguments)]
    async fn many(&self, a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: i32, h: i64) -> u128 {
        u128::from(a)
            + u128::from(b)
            + u128::from(c)
            + u128::from(d)
            + (i128::from(e) + i128::from(f) + i128::from(g) + i128::from(h)) as u128
    }
    async fn r#type(&self, r#in: u8) -> u8 {
        r#in
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (a, b) = netchan::Session::pair();
    a.serve(KindsServer::new(Impl));
    let c = KindsClient::new(&b);
    let _: Result<(), netchan::RpcError> = c.nothing().await.map(|()| ()).or(Ok(()));
    drop(c.unit());
    drop(c.fallible(String::new()));
    drop(c.maybe(1));
    drop(c.pair());
    drop(c.map());
    drop(c.cow(Cow::Borrowed("x")));
    drop(c.stream(1));
    drop(c.sink(netchan::channel(1).0));
    drop(c.many(1, 2, 3, 4, 5, 6, 7, 8));
    drop(c.r#type(1));
}
