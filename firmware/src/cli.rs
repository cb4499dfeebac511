//! Command line (firmware/README.md is the contract) and the run of N devices.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;
use tokio::time::Instant;

use crate::audio::load_wav;
use crate::device::{Config, Device, TurnInput};
use crate::log::Logger;
use crate::mic::voice_onset_start;
use crate::summary::{DeviceError, ErrorKind, Summary};

#[derive(Parser, Debug)]
#[command(
    name = "echokit-vdev",
    version,
    allow_negative_numbers = true,
    about = "A virtual EchoKit device: talks to an EchoKit server like the echokit_box firmware"
)]
pub struct Cli {
    /// Chat endpoint prefix; the id is appended (a `/` is inserted if missing).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws/", value_name = "URL")]
    pub server: String,
    /// Device id (the firmware uses its 12-hex-digit MAC).
    #[arg(long, default_value = "02ec00000001")]
    pub id: String,
    /// One WAV per turn, in order.
    #[arg(long, num_args = 1.., value_name = "WAV")]
    pub turns: Vec<PathBuf>,
    /// More turn WAVs (after those of --turns).
    #[arg(value_name = "WAV")]
    pub wavs: Vec<PathBuf>,
    /// Pace factor for microphone, playback and gaps (1 = real time, 0 = no pacing).
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub speed: f64,
    /// Seconds between Listening and the next turn's speech.
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    pub gap: f64,
    /// Per-turn limit, StartChat -> EndResponse, seconds (not scaled by --speed).
    #[arg(long, default_value_t = 60.0, value_name = "S")]
    pub timeout: f64,
    /// Boot: press K0 this long after connecting if no hello arrives.
    #[arg(long, default_value_t = 0.5, value_name = "S")]
    pub k0_after: f64,
    /// Skip the boot connection; connect with reconnect=true straight away.
    #[arg(long)]
    pub no_hello: bool,
    /// After each EndResponse: K0 (Idle, socket closed), then K0 again (reconnect).
    #[arg(long)]
    pub reconnect_between_turns: bool,
    /// Firmware barge-in: the next turn's speech starts S seconds after the reply's first audio.
    #[arg(long, value_name = "S")]
    pub barge_in: Option<f64>,
    /// Microphone block size in samples (256 or 512).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub block: usize,
    /// Log and drop what cannot be decoded or played, like the firmware.
    #[arg(long)]
    pub lenient: bool,
    /// Run N devices at once; device i has id ID + i (48-bit hex).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub devices: usize,
    /// Device i boots i x S seconds after device 0.
    #[arg(long, default_value_t = 0.0, value_name = "S")]
    pub stagger: f64,
    /// Write events.jsonl, summary.json and per device hello.wav and reply-<turn>.wav.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

pub fn usage(msg: impl Into<String>) -> DeviceError {
    DeviceError::new(ErrorKind::Usage, msg)
}

pub fn check_secs(name: &str, v: f64, positive: bool) -> Result<(), DeviceError> {
    if !v.is_finite() || v < 0.0 || (positive && v == 0.0) || v > 1e6 {
        let want = if positive { "> 0" } else { ">= 0" };
        return Err(usage(format!(
            "--{name} must be a finite number {want}, got {v}"
        )));
    }
    Ok(())
}

/// Device ids: ID itself for one device, ID + i as 12 hex digits for several.
pub fn device_ids(id: &str, n: usize) -> Result<Vec<String>, DeviceError> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(usage(format!(
            "--id {id:?}: use letters, digits, '-', '_' or '.' (the firmware uses 12 hex digits)"
        )));
    }
    if n == 1 {
        return Ok(vec![id.to_string()]);
    }
    let base = u64::from_str_radix(id, 16)
        .ok()
        .filter(|_| id.len() <= 12)
        .ok_or_else(|| {
            usage(format!(
                "--id {id:?} must be at most 12 hex digits with --devices {n}"
            ))
        })?;
    let last = base + n as u64 - 1;
    if last > 0xffff_ffff_ffff {
        return Err(usage(format!("--id {id} + {n} devices exceeds 48 bits")));
    }
    Ok((0..n as u64)
        .map(|i| format!("{:012x}", base + i))
        .collect())
}

/// The chat endpoint prefix, ending in `/`.
pub fn server_prefix(url: &str) -> Result<String, DeviceError> {
    if url.starts_with("wss://") {
        return Err(usage(
            "--server: wss:// is not supported (the firmware has no TLS); use ws://",
        ));
    }
    if !url.starts_with("ws://") || url.len() <= "ws://".len() {
        return Err(usage(format!("--server {url:?} must be a ws:// URL")));
    }
    if url.contains('?') || url.contains('#') {
        return Err(usage(format!(
            "--server {url:?}: no query or fragment (the id and parameters are appended)"
        )));
    }
    let mut s = url.to_string();
    if !s.ends_with('/') {
        s.push('/');
    }
    Ok(s)
}

fn config(cli: &Cli) -> Result<Config, DeviceError> {
    check_secs("speed", cli.speed, false)?;
    check_secs("gap", cli.gap, false)?;
    check_secs("timeout", cli.timeout, true)?;
    check_secs("k0-after", cli.k0_after, false)?;
    check_secs("stagger", cli.stagger, false)?;
    if let Some(b) = cli.barge_in {
        check_secs("barge-in", b, false)?;
    }
    if cli.block != 256 && cli.block != 512 {
        return Err(usage(format!(
            "--block must be 256 or 512, got {}",
            cli.block
        )));
    }
    check_devices(cli.devices)?;
    if cli.turns.is_empty() && cli.wavs.is_empty() {
        return Err(usage(
            "no turns: give at least one WAV (--turns or positional)",
        ));
    }
    Ok(Config {
        server: server_prefix(&cli.server)?,
        speed: cli.speed,
        gap: cli.gap,
        timeout: cli.timeout,
        k0_after: cli.k0_after,
        no_hello: cli.no_hello,
        reconnect_between_turns: cli.reconnect_between_turns,
        barge_in: cli.barge_in,
        block: cli.block,
        lenient: cli.lenient,
        out: cli.out.clone(),
    })
}

fn load_inputs(cli: &Cli) -> Result<Vec<TurnInput>, DeviceError> {
    cli.turns
        .iter()
        .chain(&cli.wavs)
        .map(|p| {
            let speech = load_wav(p).map_err(|e| DeviceError::new(ErrorKind::Local, e))?;
            let start = voice_onset_start(&speech, cli.block);
            Ok(TurnInput {
                wav: p.display().to_string(),
                speech: speech[start..].into(),
            })
        })
        .collect()
}

/// Runs the devices of a parsed command line; the summary (already written to
/// `DIR/summary.json` with `--out`).
pub async fn run(cli: Cli) -> Summary {
    let t0 = Instant::now();
    match run_inner(cli, t0).await {
        Ok(s) => s,
        Err(e) => Summary::failed(&e),
    }
}

async fn run_inner(cli: Cli, t0: Instant) -> Result<Summary, DeviceError> {
    let cfg = Arc::new(config(&cli)?);
    let ids = device_ids(&cli.id, cli.devices)?;
    let inputs: Arc<[TurnInput]> = load_inputs(&cli)?.into();
    let local = |e: String| DeviceError::new(ErrorKind::Local, e);
    if let Some(dir) = &cli.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| local(format!("cannot create {}: {e}", dir.display())))?;
    }
    let events = cli.out.as_ref().map(|d| d.join("events.jsonl"));
    let log = Arc::new(Logger::new(t0, events.as_deref(), cli.quiet).map_err(local)?);

    let devices = ids
        .into_iter()
        .map(|id| Device::new(cfg.clone(), id, log.clone(), inputs.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let devices = run_staggered(devices.into_iter().map(Device::run), cli.stagger, t0).await?;
    log.finish().map_err(local)?;
    let summary = Summary::of(devices);
    if let Some(dir) = &cli.out {
        write_summary(dir, &summary)?;
    }
    Ok(summary)
}

/// Runs the devices' futures at once, future i started i x `stagger` seconds after `t0`; their
/// outcomes in order.
pub async fn run_staggered<F>(
    devices: impl IntoIterator<Item = F>,
    stagger: f64,
    t0: Instant,
) -> Result<Vec<F::Output>, DeviceError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = devices
        .into_iter()
        .enumerate()
        .map(|(i, dev)| {
            let delay = Duration::from_secs_f64(stagger * i as f64);
            tokio::spawn(async move {
                tokio::time::sleep_until(t0 + delay).await;
                dev.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.map_err(|e| {
            DeviceError::new(ErrorKind::Local, format!("a device task failed: {e}"))
        })?);
    }
    Ok(out)
}

/// The `--devices` count, checked.
pub fn check_devices(n: usize) -> Result<(), DeviceError> {
    if n == 0 || n > 100_000 {
        return Err(usage(format!(
            "--devices must be between 1 and 100000, got {n}"
        )));
    }
    Ok(())
}

/// `DIR/summary.json`.
pub fn write_summary<D: Serialize>(dir: &Path, summary: &Summary<D>) -> Result<(), DeviceError> {
    let p = dir.join("summary.json");
    let doc = serde_json::to_string_pretty(summary).expect("summary serialises");
    std::fs::write(&p, doc + "\n").map_err(|e| {
        DeviceError::new(
            ErrorKind::Local,
            format!("cannot write {}: {e}", p.display()),
        )
    })
}

/// Prints the summary (and its error on stderr); the exit code.
pub fn report<D: Serialize>(program: &str, summary: &Summary<D>) -> i32 {
    if let Some(e) = &summary.error {
        eprintln!("{program}: {}", e.message);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(summary).expect("summary serialises")
    );
    summary.exit_code
}

/// A whole program (`echokit-vdev`, `xiaozhi-vdev`): the async runtime, the arguments parsed
/// as `C`, `run`, the summary printed; exits with the summary's code.
pub fn program<C, D, F, Fut>(name: &str, run: F) -> !
where
    C: Parser,
    D: Serialize,
    F: FnOnce(C) -> Fut,
    Fut: std::future::Future<Output = Summary<D>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match C::try_parse_from(std::env::args_os()) {
        Ok(cli) => report(name, &rt.block_on(run(cli))),
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            code
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_count_up_in_48_bit_hex() {
        assert_eq!(device_ids("02ec00000001", 1).unwrap(), ["02ec00000001"]);
        assert_eq!(
            device_ids("02ec000000fe", 3).unwrap(),
            ["02ec000000fe", "02ec000000ff", "02ec00000100"]
        );
        assert!(device_ids("ffffffffffff", 2).is_err());
        assert!(device_ids("not-hex", 2).is_err());
        assert!(device_ids("a/b", 1).is_err());
        assert!(device_ids("", 1).is_err());
    }

    #[test]
    fn server_prefix_gets_a_slash() {
        assert_eq!(server_prefix("ws://h:1/ws").unwrap(), "ws://h:1/ws/");
        assert_eq!(server_prefix("ws://h:1/ws/").unwrap(), "ws://h:1/ws/");
        assert!(server_prefix("wss://h/ws/")
            .unwrap_err()
            .message
            .contains("TLS"));
        assert!(server_prefix("http://h/ws/").is_err());
        assert!(server_prefix("ws://h/ws/?x=1").is_err());
    }

    fn parse(args: &[&str]) -> Result<Config, DeviceError> {
        let cli = Cli::try_parse_from(std::iter::once("echokit-vdev").chain(args.iter().copied()))
            .unwrap();
        config(&cli)
    }

    #[test]
    fn option_validation() {
        assert!(parse(&["a.wav"]).is_ok());
        assert!(parse(&[]).unwrap_err().message.contains("no turns"));
        assert!(parse(&["--block", "300", "a.wav"]).is_err());
        assert!(parse(&["--speed", "-1", "a.wav"]).is_err());
        assert!(parse(&["--speed", "NaN", "a.wav"]).is_err());
        assert!(parse(&["--timeout", "0", "a.wav"]).is_err());
        assert!(parse(&["--devices", "0", "a.wav"]).is_err());
        let c = parse(&[
            "--speed",
            "0",
            "--barge-in",
            "0.2",
            "--turns",
            "a.wav",
            "b.wav",
        ])
        .unwrap();
        assert_eq!((c.speed, c.barge_in), (0.0, Some(0.2)));
    }
}
