#[netchan::service]
pub struct Share {
    files: Vec<String>,
}

fn main() {}
