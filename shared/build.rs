// The migrations are embedded at compile time: a new or edited file must rebuild this crate.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
