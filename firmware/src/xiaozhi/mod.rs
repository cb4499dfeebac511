//! xiaozhi-vdev: a virtual xiaozhi device, as the 78/xiaozhi-esp32 firmware behaves on the wire
//! (firmware/README.md, "xiaozhi-vdev"). It shares the WAV input, the event log and the summary
//! conventions of the EchoKit device.

pub mod cli;
pub mod device;
pub mod mcp;
pub mod mic;
pub mod ota;
pub mod speaker;
pub mod summary;
pub mod wire;
