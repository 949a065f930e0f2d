#[netchan::service]
pub trait Share {
    fn list(&self) -> Vec<String>;
}

fn main() {}
