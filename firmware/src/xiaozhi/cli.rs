//! The `xiaozhi-vdev` command line (firmware/README.md is the contract) and its run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::time::Instant;

use super::device::{Config, Device};
use super::mcp::Tool;
use super::ota::{Identity, WsConfig};
use super::summary::DeviceSummary;
use super::wire::Mode;
use crate::audio::load_wav;
use crate::cli::{check_devices, check_secs, run_staggered, usage, write_summary};
use crate::device::TurnInput;
use crate::log::Logger;
use crate::summary::{DeviceError, ErrorKind, Summary};

#[derive(Parser, Debug)]
#[command(
    name = "xiaozhi-vdev",
    version,
    about = "A virtual xiaozhi device: talks to a server like the xiaozhi-esp32 firmware"
)]
pub struct Cli {
    /// The OTA URL the device POSTs to at boot; its answer gives the WebSocket URL and token.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/xiaozhi/ota/",
        value_name = "URL"
    )]
    pub ota: String,
    /// Skip the OTA call and open this WebSocket URL (as a device whose flash holds it).
    #[arg(long, value_name = "URL")]
    pub ws: Option<String>,
    /// With --ws: the stored token (sent as `Authorization: Bearer <token>`).
    #[arg(long, default_value = "", requires = "ws")]
    pub token: String,
    /// With --ws: the stored binary protocol version (1, 2 or 3).
    #[arg(long, default_value_t = 1, requires = "ws", value_name = "N")]
    pub protocol_version: u32,
    /// Station MAC (`Device-Id`), colon-separated.
    #[arg(long, default_value = "02:ec:00:00:00:01")]
    pub mac: String,
    /// `Client-Id` (default: a UUID made from the MAC).
    #[arg(long, value_name = "UUID")]
    pub client_id: Option<String>,
    /// Board type and name (User-Agent, OTA body, MCP serverInfo).
    #[arg(long, default_value = "bread-compact-wifi", value_name = "NAME")]
    pub board: String,
    /// Firmware version (User-Agent, OTA body, MCP serverInfo).
    #[arg(long, default_value = "2.4.2", value_name = "V")]
    pub firmware_version: String,
    /// Language code (Accept-Language, OTA body).
    #[arg(long, default_value = "zh-CN", value_name = "CODE")]
    pub language: String,
    /// Listening mode of `listen start`.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// One WAV per turn, in order.
    #[arg(long, num_args = 1.., value_name = "WAV")]
    pub turns: Vec<PathBuf>,
    /// More turn WAVs (after those of --turns).
    #[arg(value_name = "WAV")]
    pub wavs: Vec<PathBuf>,
    /// Pace factor of the user (microphone frames and --gap): 1 = real time.
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub speed: f64,
    /// Seconds of silence the microphone streams before the user speaks each WAV.
    #[arg(long, default_value_t = 0.5, value_name = "S")]
    pub gap: f64,
    /// Per-turn limit, seconds from the turn's start to `tts stop`.
    #[arg(long, default_value_t = 60.0, value_name = "S")]
    pub timeout: f64,
    /// Press the button (send `abort`) this many ms after the reply's first audio, every turn.
    #[arg(long, value_name = "MS")]
    pub abort_after: Option<u64>,
    /// A fake device tool, as JSON (repeatable): {"name", "description", "properties",
    /// "user_only", "result"}.
    #[arg(long = "mcp-tool", value_name = "JSON")]
    pub mcp_tools: Vec<String>,
    /// Log and drop what the firmware would drop; by default that is a protocol violation.
    #[arg(long)]
    pub lenient: bool,
    /// Run N devices at once; device i has the MAC of --mac + i (48 bits).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub devices: usize,
    /// Device i boots i x S seconds after device 0.
    #[arg(long, default_value_t = 0.0, value_name = "S")]
    pub stagger: f64,
    /// Write events.jsonl, summary.json and DIR/<mac digits>/reply-<turn>.wav.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// The MAC, lowercase; six hex pairs separated by colons.
pub fn mac(s: &str) -> Result<String, DeviceError> {
    let parts: Vec<&str> = s.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if !ok {
        return Err(usage(format!(
            "--mac {s:?}: six hex pairs separated by colons, e.g. 02:ec:00:00:00:01"
        )));
    }
    Ok(s.to_ascii_lowercase())
}

/// The MACs of `n` devices: `base` itself, then counting up as a 48-bit number.
pub fn macs(base: &str, n: usize) -> Result<Vec<String>, DeviceError> {
    let first = u64::from_str_radix(&base.replace(':', ""), 16).expect("a checked MAC");
    if first + n as u64 - 1 > 0xffff_ffff_ffff {
        return Err(usage(format!("--mac {base} + {n} devices exceeds 48 bits")));
    }
    Ok((first..first + n as u64)
        .map(|m| {
            let b = m.to_be_bytes();
            b[2..]
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .collect())
}

/// A stable UUID v4 layout made from the MAC (the firmware makes a random one on first boot).
pub fn uuid_of(mac: &str) -> String {
    format!("00000000-0000-4000-8000-{}", mac.replace(':', ""))
}

fn config(cli: &Cli) -> Result<Config, DeviceError> {
    check_secs("gap", cli.gap, false)?;
    check_secs("timeout", cli.timeout, true)?;
    check_secs("speed", cli.speed, true)?;
    check_secs("stagger", cli.stagger, false)?;
    check_devices(cli.devices)?;
    if cli.devices > 1 && cli.client_id.is_some() {
        return Err(usage(
            "--client-id names one device; leave it out with --devices (each gets its own)",
        ));
    }
    if cli.turns.is_empty() && cli.wavs.is_empty() {
        return Err(usage(
            "no turns: give at least one WAV (--turns or positional)",
        ));
    }
    if !cli.ota.starts_with("http://") {
        return Err(usage(format!(
            "--ota {:?} must be an http:// URL (xiaozhi-vdev has no TLS)",
            cli.ota
        )));
    }
    if !(1..=3).contains(&cli.protocol_version) {
        return Err(usage(format!(
            "--protocol-version must be 1, 2 or 3, got {}",
            cli.protocol_version
        )));
    }
    let mac = mac(&cli.mac)?;
    let tools = cli
        .mcp_tools
        .iter()
        .map(|t| Tool::from_spec(t).map_err(usage))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Config {
        ota: cli.ota.clone(),
        ws: cli.ws.as_ref().map(|url| WsConfig {
            url: url.clone(),
            token: cli.token.clone(),
            version: cli.protocol_version,
        }),
        identity: Identity {
            uuid: cli.client_id.clone().unwrap_or_else(|| uuid_of(&mac)),
            mac,
            board: cli.board.clone(),
            version: cli.firmware_version.clone(),
            language: cli.language.clone(),
        },
        mode: cli.mode,
        speed: cli.speed,
        gap: cli.gap,
        timeout: cli.timeout,
        abort_after: cli.abort_after.map(Duration::from_millis),
        tools,
        lenient: cli.lenient,
        out: cli.out.clone(),
    })
}

/// Runs the device of a parsed command line; the summary (also written to `DIR/summary.json`).
pub async fn run(cli: Cli) -> Summary<DeviceSummary> {
    let t0 = Instant::now();
    match run_inner(cli, t0).await {
        Ok(s) => s,
        Err(e) => Summary::failed(&e),
    }
}

async fn run_inner(cli: Cli, t0: Instant) -> Result<Summary<DeviceSummary>, DeviceError> {
    let cfg = Arc::new(config(&cli)?);
    let local = |e: String| DeviceError::new(ErrorKind::Local, e);
    let inputs: Arc<[TurnInput]> = cli
        .turns
        .iter()
        .chain(&cli.wavs)
        .map(|p| {
            Ok(TurnInput {
                wav: p.display().to_string(),
                speech: load_wav(p).map_err(local)?.into(),
            })
        })
        .collect::<Result<Vec<_>, DeviceError>>()?
        .into();
    if let Some(dir) = &cli.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| local(format!("cannot create {}: {e}", dir.display())))?;
    }
    let events = cli.out.as_ref().map(|d| d.join("events.jsonl"));
    let log = Arc::new(Logger::new(t0, events.as_deref(), cli.quiet).map_err(local)?);
    let devices = macs(&cfg.identity.mac, cli.devices)?
        .into_iter()
        .map(|mac| {
            let mut one = (*cfg).clone();
            if cli.devices > 1 {
                one.identity.uuid = uuid_of(&mac);
                one.identity.mac = mac;
            }
            Device::new(Arc::new(one), log.clone(), inputs.clone())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let devices = run_staggered(devices.into_iter().map(Device::run), cli.stagger, t0).await?;
    log.finish().map_err(local)?;
    let summary = Summary::of(devices);
    if let Some(dir) = &cli.out {
        write_summary(dir, &summary)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, DeviceError> {
        let cli = Cli::try_parse_from(std::iter::once("xiaozhi-vdev").chain(args.iter().copied()))
            .unwrap();
        config(&cli)
    }

    #[test]
    fn option_validation() {
        let c = parse(&["a.wav"]).unwrap();
        assert_eq!(c.identity.mac, "02:ec:00:00:00:01");
        assert_eq!(c.identity.uuid, "00000000-0000-4000-8000-02ec00000001");
        assert_eq!(c.mode, Mode::Auto);
        assert!(c.ws.is_none());
        assert!(parse(&[]).unwrap_err().message.contains("no turns"));
        assert!(parse(&["--speed", "0", "a.wav"]).is_err());
        assert!(parse(&["--mac", "02ec00000001", "a.wav"]).is_err());
        assert!(parse(&["--ota", "https://h/xiaozhi/ota/", "a.wav"]).is_err());
        assert!(parse(&["--mcp-tool", "{", "a.wav"]).is_err());
        assert!(parse(&["--ws", "ws://h/x/", "--protocol-version", "4", "a.wav"]).is_err());
        let c = parse(&[
            "--ws",
            "ws://h/x/",
            "--token",
            "t",
            "--mac",
            "AA:BB:CC:DD:EE:FF",
            "--mode",
            "manual",
            "--abort-after",
            "300",
            "a.wav",
        ])
        .unwrap();
        assert_eq!(
            c.ws,
            Some(WsConfig {
                url: "ws://h/x/".into(),
                token: "t".into(),
                version: 1
            })
        );
        assert_eq!(c.identity.mac, "aa:bb:cc:dd:ee:ff");
        assert_eq!(c.mode, Mode::Manual);
        assert_eq!(c.abort_after, Some(Duration::from_millis(300)));
        assert!(parse(&["--devices", "0", "a.wav"]).is_err());
        assert!(parse(&["--devices", "2", "--client-id", "u", "a.wav"]).is_err());
        assert_eq!(
            macs("02:ec:00:00:00:ff", 2).unwrap(),
            ["02:ec:00:00:00:ff", "02:ec:00:00:01:00"]
        );
        assert!(macs("ff:ff:ff:ff:ff:ff", 2).is_err());
        // --token needs --ws.
        assert!(Cli::try_parse_from(["xiaozhi-vdev", "--token", "t", "a.wav"]).is_err());
    }
}
