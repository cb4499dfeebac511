//! `echokit-vdev`: see firmware/README.md.

fn main() {
    echokit_vdev::cli::program("echokit-vdev", echokit_vdev::cli::run);
}
