//! `xiaozhi-vdev`: see firmware/README.md.

fn main() {
    echokit_vdev::cli::program("xiaozhi-vdev", echokit_vdev::xiaozhi::cli::run);
}
