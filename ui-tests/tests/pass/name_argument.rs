//! `name = "..."` sets the name a server is served (and a client calls)
//! under; `named` overrides it per instance.
#![deny(warnings)]

#[netchan::service(name = "share.v1")]
pub trait Share {
    async fn list(&self) -> Vec<String>;
}

#[netchan::service(name = "other.v1")]
pub trait Other {
    async fn ping(&self);
}

struct Files;

impl Share for Files {
    async fn list(&self) -> Vec<String> {
        vec!["a".to_owned()]
    }
}

fn name_of<S: netchan::Service>(_: &S) -> &'static str {
    // `NAME` is hidden, but reachable through the public trait.
    S::NAME
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let server = ShareServer::new(Files);
    assert_eq!(name_of(&server), "share.v1");
    assert_eq!(
        format!("{server:?}"),
        r#"ShareServer { name: "share.v1", .. }"#
    );
    let renamed = ShareServer::named(Files, "share.v2");
    assert_eq!(
        format!("{renamed:?}"),
        r#"ShareServer { name: "share.v2", .. }"#
    );
    assert_eq!(name_of(&renamed), "share.v1");

    let (a, b) = netchan::Session::pair();
    a.serve(server);
    let _client = ShareClient::new(&b);
    let _client2 = ShareClient::named(&b, "share.v2");
    let _other = OtherClient::new(&b);
}
