//! echokit-vdev: a virtual EchoKit device, and xiaozhi-vdev: a virtual xiaozhi device (see
//! firmware/README.md).

pub mod audio;
pub mod cli;
pub mod device;
pub mod events;
pub mod log;
pub mod mic;
pub mod player;
pub mod summary;
pub mod xiaozhi;
