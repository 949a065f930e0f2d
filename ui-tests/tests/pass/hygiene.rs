//! The expansion names nothing from the prelude and no path a user item can
//! shadow: it compiles under `#![no_implicit_prelude]`, beside local items
//! named like std's, with argument names equal to the generated code's
//! locals and parameters, and with a trait named `S` (the server's usual
//! type parameter).
#![no_implicit_prelude]
#![deny(warnings)]
#![allow(dead_code, non_camel_case_types)]

extern crate netchan;
extern crate std;
extern crate tokio;

mod shadows {
    // Local items named like everything generated code might use. (Not
    // primitives such as `str`: serde's own derive output names them bare.)
    pub struct Result;
    pub struct Option;
    pub struct Ok;
    pub struct Err;
    pub struct Some;
    pub struct Box;
    pub struct Arc;
    pub struct String;
    pub struct Vec;
    pub struct Duration;
    pub struct Session;
    pub struct Client;
    pub struct Service;
    pub struct BoxFuture;
    pub struct RpcError;
    pub trait Send {}
    pub trait Sync {}
    pub trait Clone {}
    pub trait Debug {}
    pub trait Future {}
    pub trait From {}
    pub trait Serialize {}
    pub trait Deserialize {}
    pub mod core {}
    pub mod std {}
    pub mod serde {}
    pub mod netchan {}
}

mod service {
    // Unused: had the expansion named any of these, it would have picked
    // the shadow and failed to compile.
    #[allow(unused_imports)]
    use super::shadows::*;

    #[::netchan::service]
    pub trait Hygiene {
        async fn locals(
            &self,
            value: u8,
            service: u8,
            request: u8,
            arg0: u8,
            arg1: u8,
            session: u8,
            client: u8,
            name: u8,
            timeout: u8,
            f: u8,
        ) -> ::std::string::String;
        async fn unit(&self);
    }

    #[::netchan::service]
    pub trait S {
        async fn s(&self, s: u8) -> u8;
    }

    pub struct Impl;

    impl Hygiene for Impl {
        async fn locals(
            &self,
            value: u8,
            _service: u8,
            _request: u8,
            _arg0: u8,
            _arg1: u8,
            _session: u8,
            _client: u8,
            _name: u8,
            _timeout: u8,
            _f: u8,
        ) -> ::std::string::String {
            ::std::string::ToString::to_string(&value)
        }
        async fn unit(&self) {}
    }

    impl S for Impl {
        async fn s(&self, s: u8) -> u8 {
            s
        }
    }
}

fn main() {
    let runtime = ::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (a, b) = ::netchan::Session::pair();
        a.serve(service::HygieneServer::new(service::Impl));
        a.serve(service::SServer::new(service::Impl));
        let client = service::HygieneClient::new(&b);
        let future = client.locals(1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
        ::std::mem::drop(future);
        ::std::mem::drop(service::SClient::new(&b).s(1));
    });
}
