//! A `pub(crate)` trait in a module: the generated items get the same
//! visibility, so `unreachable_pub` stays quiet, and they are usable from
//! the rest of the crate. A private trait works within its module.
#![deny(warnings, unreachable_pub, missing_docs, missing_debug_implementations)]

mod inner {
    #[netchan::service]
    pub(crate) trait Counter {
        async fn next(&self) -> u64;
    }

    pub(crate) struct Count(pub(crate) std::sync::atomic::AtomicU64);

    impl Counter for Count {
        async fn next(&self) -> u64 {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        }
    }

    #[netchan::service]
    trait Private {
        async fn ping(&self);
    }

    struct Pong;

    impl Private for Pong {
        async fn ping(&self) {}
    }

    pub(crate) fn private_works(session: &netchan::Session) {
        session.serve(PrivateServer::new(Pong));
        drop(PrivateClient::new(session).ping());
    }
}

mod nested {
    pub(crate) mod deeper {
        #[netchan::service]
        pub(in crate::nested) trait Restricted {
            async fn get(&self) -> u8;
        }
    }

    pub(crate) fn restricted_works(session: &netchan::Session) {
        drop(deeper::RestrictedClient::new(session).get());
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (a, b) = netchan::Session::pair();
    a.serve(inner::CounterServer::new(inner::Count(Default::default())));
    let client = inner::CounterClient::new(&b);
    drop(client.next());
    inner::private_works(&a);
    nested::restricted_works(&b);
}
