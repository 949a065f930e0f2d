#[netchan::service]
pub trait Share
where
    Self: Sized,
{
    async fn list(&self) -> Vec<String>
    where
        Self: Clone;
}

fn main() {}
