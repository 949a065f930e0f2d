// The trait's futures are `Send`, so an implementation holding an `Rc`
// across an `.await` is refused where it is written.
use std::rc::Rc;

#[netchan::service]
pub trait Share {
    async fn list(&self) -> Vec<String>;
}

struct Files;

impl Share for Files {
    async fn list(&self) -> Vec<String> {
        let names = Rc::new(vec![String::new()]);
        tokio::task::yield_now().await;
        (*names).clone()
    }
}

fn main() {}
