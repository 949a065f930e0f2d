use std::borrow::Cow;

#[netchan::service]
pub trait Share {
    async fn name(&self) -> &str;
    async fn label(&self) -> Cow<'_, str>;
    async fn labels(&self) -> Vec<Cow<'static, str>>;
}

fn main() {}
