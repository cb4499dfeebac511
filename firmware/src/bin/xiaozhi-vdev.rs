//! `xiaozhi-vdev`: see firmware/README.md.

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xiaozhi-vdev: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(echokit_vdev::xiaozhi::cli::main_with_args(
        std::env::args_os(),
    ));
    std::process::exit(code);
}
