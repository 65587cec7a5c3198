fn main() {
    println!("edgepull {}", env!("CARGO_PKG_VERSION"));
}
