//! Generates the Kotlin, Swift and Python bindings from the built library:
//! `cargo run -p resub-ffi --features bindgen-cli --bin uniffi-bindgen -- generate --library target/debug/libresub_ffi.so --language kotlin --out-dir OUT`.
fn main() {
    uniffi::uniffi_bindgen_main()
}
