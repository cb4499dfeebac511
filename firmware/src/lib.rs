//! echokit-vdev: a virtual EchoKit device (see firmware/README.md).

pub mod audio;
pub mod cli;
pub mod device;
pub mod events;
pub mod log;
pub mod mic;
pub mod player;
pub mod summary;
