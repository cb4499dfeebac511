//! xiaozhi-vdev against an in-process scripted xiaozhi server (tests/xz): OTA, headers, hello,
//! the listening modes, the 60 ms Opus uplink, the paced downlink and the device's queue rules,
//! abort, device MCP, violations. Real time (the microphone sped up with --speed); time
//! assertions are only lower bounds that the device's own clock guarantees.

mod xz;

use std::time::Duration;

use echokit_native::wav::read_wav;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::sleep;
use tokio_websockets::Message;
use xz::*;

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// 10 uplink frames of tone.
const WAV_SAMPLES: usize = 9600;

#[tokio::test]
async fn auto_turn_over_ota_with_the_firmware_headers_pacing_and_tcp_drop() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let wav = tone_wav(dir.path(), "q.wav", WAV_SAMPLES);
    let mut srv = server(|u| ota_reply(u, 1)).await;
    let dev = spawn(&[
        "--ota",
        &srv.ota_url,
        "--gap",
        "0.3",
        "--timeout",
        "20",
        "--quiet",
        "--out",
        &s(&out),
        &wav,
    ]);

    let ota = srv.ota_request().await;
    assert_eq!(
        (ota.method.as_str(), ota.path.as_str()),
        ("POST", "/xiaozhi/ota/")
    );
    let h = &ota.headers;
    let port = srv
        .ota_url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert_eq!(
        header(h, "host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(header(h, "activation-version"), Some("1"));
    assert_eq!(header(h, "device-id"), Some("02:ec:00:00:00:01"));
    assert_eq!(
        header(h, "client-id"),
        Some("00000000-0000-4000-8000-02ec00000001")
    );
    assert_eq!(header(h, "user-agent"), Some("bread-compact-wifi/2.4.2"));
    assert_eq!(header(h, "accept-language"), Some("zh-CN"));
    assert_eq!(header(h, "content-type"), Some("application/json"));
    assert_eq!(ota.body["mac_address"], "02:ec:00:00:00:01");
    assert_eq!(ota.body["uuid"], "00000000-0000-4000-8000-02ec00000001");
    assert_eq!(ota.body["application"]["version"], "2.4.2");
    assert_eq!(ota.body["board"]["type"], "bread-compact-wifi");

    let mut c = srv.accept().await;
    assert_eq!(c.path, "/xiaozhi/v1/");
    let h = &c.headers;
    assert_eq!(header(h, "authorization"), Some("Bearer tok"));
    assert_eq!(header(h, "protocol-version"), Some("1"));
    assert_eq!(header(h, "device-id"), Some("02:ec:00:00:00:01"));
    assert_eq!(
        header(h, "client-id"),
        Some("00000000-0000-4000-8000-02ec00000001")
    );
    // The firmware's WebSocket client writes the host without the port, and offers no extension.
    assert_eq!(header(h, "host"), Some("127.0.0.1"));
    assert_eq!(header(h, "sec-websocket-extensions"), None);

    let listen = c.hello("S", 24_000, 60).await;
    assert_eq!(
        listen,
        json!({"session_id": "S", "type": "listen", "state": "start", "mode": "auto"})
    );
    // 0.3 s of silence (frames 0-2: capture starts 120 ms after listen start, 60 ms apart), the
    // tone (frames 3-12), silence again, all streamed.
    c.frames_until(20).await;
    let frames: Vec<Vec<u8>> = c.frames.iter().map(|(f, _)| f.clone()).collect();
    let rms = uplink_rms(&frames);
    assert!(rms[..3].iter().all(|&r| r < 50.0), "{rms:?}");
    assert!(rms[4..12].iter().all(|&r| r > 1000.0), "{rms:?}");
    assert!(rms[15..].iter().all(|&r| r < 200.0), "{rms:?}");

    c.send(json!({"type": "stt", "text": "hello there", "session_id": "S"}))
        .await;
    c.tts("start").await;
    c.send(json!({"type": "llm", "text": "🙂", "emotion": "happy", "session_id": "S"}))
        .await;
    c.send(
        json!({"type": "tts", "state": "sentence_start", "text": "Hi there.", "session_id": "S"}),
    )
    .await;
    let pk = opus_packets(15, 24_000, 60);
    c.paced(&pk[..10], Duration::from_millis(60)).await;
    c.send(json!({"type": "tts", "state": "sentence_start", "text": "Bye.", "session_id": "S"}))
        .await;
    for p in &pk[10..] {
        sleep(Duration::from_millis(60)).await;
        c.binary(p.clone()).await;
    }
    c.tts("stop").await;
    // The device ends the session by dropping TCP: no Close frame.
    assert!(!c.until_gone().await, "the firmware sends no Close frame");

    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    let d = &sum.devices[0];
    assert_eq!(d.ota.as_ref().unwrap()["websocket"]["token"], "tok");
    assert_eq!(d.websocket_url.as_deref(), Some(srv.ws_url.as_str()));
    assert_eq!(d.session_id.as_deref(), Some("S"));
    let dl = d.downlink.as_ref().unwrap();
    assert_eq!((dl.sample_rate, dl.frame_duration), (24_000, 60));
    assert!(!d.upgrade_offered);
    let t = &d.turns[0];
    assert_eq!(t.stt, ["hello there"]);
    assert_eq!(t.emotions, ["happy"]);
    assert_eq!(t.sentences, ["Hi there.", "Bye."]);
    assert_eq!((t.reply_samples, t.reply_rate), (15 * 1440, 24_000));
    assert_eq!((t.pacing.packets, t.pacing.dropped_full), (15, 0));
    assert!((t.pacing.audio_s - 0.9).abs() < 1e-6, "{t:?}");
    assert!(t.pacing.max_lead_s >= 0.3 - 1e-6, "{t:?}");
    assert_eq!(t.audio_not_speaking, 0);
    let (ae, fa, end) = (
        t.t_audible_end.unwrap(),
        t.t_first_audio.unwrap(),
        t.t_playback_end.unwrap(),
    );
    assert!((t.first_audio_latency.unwrap() - (fa - ae)).abs() < 1e-5);
    assert!(fa >= ae, "{t:?}");
    // 0.9 s of audio cannot finish playing sooner than 0.9 s after it started.
    assert!(end >= fa + 0.9 - 1e-3, "{t:?}");
    assert!(end >= t.t_tts_stop.unwrap(), "{t:?}");
    // Real-time pace: frame k leaves no sooner than 120 ms + (k + 1) x 60 ms after listen start.
    let ev = events(&out);
    let frame_t: Vec<f64> = of(&ev, "frame")
        .iter()
        .map(|e| e["t"].as_f64().unwrap())
        .collect();
    let t0 = t.t_listen_start.unwrap();
    assert!(frame_t[19] - t0 >= 0.12 + 20.0 * 0.06 - 0.02, "{frame_t:?}");
    assert_eq!(of(&ev, "speech_start").len(), 1);
    let names: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("ota_request") < pos("connect") && pos("hello") < pos("listen_start"));
    assert!(pos("tts_stop") < pos("playback_done") && pos("playback_done") < pos("close"));
    let reply = t.reply_wav.as_ref().unwrap();
    assert_eq!(reply, &s(&out.join("02ec00000001/reply-1.wav")));
    let (pcm, info) = read_wav(&std::fs::read(reply).unwrap()).unwrap();
    assert_eq!((info.sample_rate, pcm.len()), (24_000, 15 * 1440));
}

#[tokio::test]
async fn manual_mode_is_push_to_talk_and_idle_between_turns() {
    let dir = tempfile::tempdir().unwrap();
    let wav = tone_wav(dir.path(), "q.wav", WAV_SAMPLES);
    let mut srv = server(|u| ota_reply(u, 1)).await;
    let dev = spawn(&[
        "--ws",
        &srv.ws_url,
        "--mode",
        "manual",
        "--gap",
        "0",
        "--speed",
        "2",
        "--timeout",
        "20",
        "--quiet",
        "--turns",
        &wav,
        &wav,
    ]);
    let mut c = srv.accept().await;
    assert_eq!(header(&c.headers, "authorization"), None);
    for turn in 1..=2 {
        let listen = c.hello_or_listen(turn).await;
        assert_eq!(
            listen,
            json!({"session_id": "S", "type": "listen", "state": "start", "mode": "manual"})
        );
        // Released right after the WAV's last frame: nothing is streamed while idle.
        assert_eq!(
            c.json().await,
            json!({"session_id": "S", "type": "listen", "state": "stop"})
        );
        assert_eq!(c.frames.len(), 10 * turn);
        c.send(json!({"type": "stt", "text": format!("turn {turn}")}))
            .await;
        c.tts("start").await;
        c.paced(&opus_packets(3, 16_000, 60), Duration::from_millis(60))
            .await;
        c.tts("stop").await;
    }
    assert!(!c.until_gone().await);
    assert_eq!(c.frames.len(), 20);
    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    let turns = &sum.devices[0].turns;
    assert_eq!(turns[1].stt, ["turn 2"]);
    for t in turns {
        assert_eq!(t.frames, 10);
        assert!(t.t_listen_stop.unwrap() >= t.t_last_speech_frame.unwrap());
        assert_eq!(t.reply_samples, 3 * 960);
    }
    // The next press comes once the reply has played.
    assert!(turns[1].t_listen_start.unwrap() >= turns[0].t_playback_end.unwrap());
}

impl Conn {
    /// Turn 1: the hello exchange and its listen start; later turns: the next listen start.
    async fn hello_or_listen(&mut self, turn: usize) -> Value {
        if turn == 1 {
            self.hello("S", 16_000, 60).await
        } else {
            self.json().await
        }
    }
}

#[tokio::test]
async fn realtime_mode_streams_while_speaking_and_listens_once() {
    let dir = tempfile::tempdir().unwrap();
    let wav = tone_wav(dir.path(), "q.wav", WAV_SAMPLES);
    let mut srv = server(|u| ota_reply(u, 1)).await;
    let dev = spawn(&[
        "--ws",
        &srv.ws_url,
        "--mode",
        "realtime",
        "--gap",
        "0.2",
        "--speed",
        "2",
        "--timeout",
        "20",
        "--quiet",
        "--turns",
        &wav,
        &wav,
    ]);
    let mut c = srv.accept().await;
    assert_eq!(c.hello("S", 16_000, 60).await["mode"], "realtime");
    c.frames_until(12).await;
    c.tts("start").await;
    let n = c.frames.len();
    c.paced(&opus_packets(5, 16_000, 60), Duration::from_millis(60))
        .await;
    // The microphone stays on while speaking.
    c.frames_until(n + 5).await;
    c.tts("stop").await;
    // Turn 2 comes on the same stream, without a new listen start: wait for its tone.
    let mut seen_silence = false;
    loop {
        let k = c.frames.len();
        c.frames_until(k + 1).await;
        let frames: Vec<Vec<u8>> = c.frames.iter().map(|(f, _)| f.clone()).collect();
        let r = *uplink_rms(&frames).last().unwrap();
        seen_silence |= r < 200.0;
        if seen_silence && r > 1000.0 {
            break;
        }
        assert!(k < 200, "no second utterance");
    }
    c.tts("start").await;
    c.paced(&opus_packets(2, 16_000, 60), Duration::from_millis(60))
        .await;
    c.tts("stop").await;
    assert!(!c.until_gone().await);
    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    let turns = &sum.devices[0].turns;
    assert!(turns[0].t_listen_start.is_some());
    assert_eq!(turns[1].t_listen_start, None);
    assert!(turns[0].frames >= 17, "{:?}", turns[0]);
    assert_eq!(turns[1].reply_samples, 2 * 960);
}

#[tokio::test]
async fn abort_is_sent_after_the_first_audio_and_the_device_plays_on_until_tts_stop() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let wav = tone_wav(dir.path(), "q.wav", WAV_SAMPLES);
    let mut srv = server(|u| ota_reply(u, 1)).await;
    let dev = spawn(&[
        "--ws",
        &srv.ws_url,
        "--abort-after",
        "150",
        "--gap",
        "0",
        "--speed",
        "4",
        "--timeout",
        "20",
        "--quiet",
        "--out",
        &s(&out),
        &wav,
    ]);
    let mut c = srv.accept().await;
    c.hello("S", 16_000, 60).await;
    c.frames_until(10).await;
    c.tts("start").await;
    let pk = opus_packets(60, 16_000, 60);
    for p in &pk[..5] {
        c.binary(p.clone()).await;
    }
    let mut next = 5;
    let abort = loop {
        tokio::select! {
            m = c.ws.next() => {
                let m = m.unwrap().unwrap();
                if m.is_text() {
                    break m.as_text().unwrap().to_string();
                }
            }
            _ = sleep(Duration::from_millis(60)) => {
                assert!(next < pk.len(), "no abort");
                c.binary(pk[next].clone()).await;
                next += 1;
            }
        }
    };
    assert_eq!(abort, r#"{"session_id":"S","type":"abort"}"#);
    // The device stays speaking until tts stop: this packet is still played.
    c.binary(pk[next].clone()).await;
    c.tts("stop").await;
    assert!(!c.until_gone().await);
    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    let t = &sum.devices[0].turns[0];
    let a = t.abort.as_ref().expect("abort recorded");
    assert!(a.t_sent - t.t_first_audio.unwrap() >= 0.15 - 1e-3, "{t:?}");
    assert!(a.packets_after >= 1, "{a:?}");
    let last = a.last_audio_after.unwrap();
    let stop = a.tts_stop_after.unwrap();
    assert!(last >= 0.0 && stop >= last, "{a:?}");
    assert!(a.silent_after.unwrap() >= stop, "{a:?}");
    assert_eq!(t.audio_not_speaking, 0);
    assert_eq!(of(&events(&out), "abort").len(), 1);
}

#[tokio::test]
async fn device_mcp_initialize_list_and_call() {
    let dir = tempfile::tempdir().unwrap();
    let wav = tone_wav(dir.path(), "q.wav", WAV_SAMPLES);
    let mut srv = server(|u| ota_reply(u, 1)).await;
    let lamp = r#"{"name":"self.lamp.set","description":"Turn the lamp on or off","properties":{"on":{"type":"boolean"}},"result":"lamp on"}"#;
    let dev = spawn(&[
        "--ws",
        &srv.ws_url,
        "--mcp-tool",
        lamp,
        "--gap",
        "0",
        "--speed",
        "4",
        "--timeout",
        "20",
        "--quiet",
        &wav,
    ]);
    let mut c = srv.accept().await;
    c.hello("S", 16_000, 60).await;
    let rpc = |id: Value, method: &str, params: Value| json!({"type": "mcp", "payload": {"jsonrpc": "2.0", "id": id, "method": method, "params": params}});
    c.send(rpc(
        json!(1),
        "initialize",
        json!({"protocolVersion": "2024-11-05", "capabilities": {"vision": {"url": "http://v/", "token": "x"}}}),
    ))
    .await;
    let r = c.json().await;
    assert_eq!(r["session_id"], "S");
    assert_eq!(r["type"], "mcp");
    assert_eq!(
        r["payload"],
        json!({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2024-11-05",
            "capabilities": {"tools": {}}, "serverInfo": {"name": "bread-compact-wifi", "version": "2.4.2"}}})
    );
    c.send(json!({"type": "mcp", "payload": {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}}))
        .await;
    let r = c.json().await;
    let names: Vec<&str> = r["payload"]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "self.get_device_status",
            "self.audio_speaker.set_volume",
            "self.lamp.set"
        ]
    );
    // A string id gets no reply: the next reply is the call's.
    c.send(rpc(json!("x"), "tools/list", json!({}))).await;
    c.send(rpc(
        json!(1001),
        "tools/call",
        json!({"name": "self.lamp.set", "arguments": {"on": true}}),
    ))
    .await;
    let r = c.json().await;
    assert_eq!(
        r["payload"],
        json!({"jsonrpc": "2.0", "id": 1001, "result": {"content": [{"type": "text", "text": "lamp on"}], "isError": false}})
    );
    c.send(rpc(
        json!(1002),
        "tools/call",
        json!({"name": "self.audio_speaker.set_volume", "arguments": {"volume": 101}}),
    ))
    .await;
    let r = c.json().await;
    assert_eq!(
        r["payload"],
        json!({"jsonrpc": "2.0", "id": 1002, "error": {"message": "Value exceeds maximum allowed: 100"}})
    );
    c.tts("start").await;
    c.binary(opus_packets(1, 16_000, 60).remove(0)).await;
    c.tts("stop").await;
    assert!(!c.until_gone().await);
    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    let d = &sum.devices[0];
    assert_eq!(d.tool_calls.len(), 2);
    assert_eq!(d.tool_calls[0].name, "self.lamp.set");
    assert_eq!(d.tool_calls[0].arguments, json!({"on": true}));
    assert_eq!(d.tool_calls[0].result.as_deref(), Some("lamp on"));
    assert!(d.tool_calls[1].error.is_some());
    assert_eq!(d.volume, 70);
    let ignored: Vec<_> = d.mcp.iter().filter(|m| m.ignored.is_some()).collect();
    assert_eq!(ignored.len(), 1);
    assert_eq!(ignored[0].id, None);
}

#[tokio::test]
async fn a_downlink_burst_overflows_the_decode_queue_and_slow_audio_underruns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let wav = tone_wav(dir.path(), "q.wav", WAV_SAMPLES);
    let mut srv = server(|u| ota_reply(u, 1)).await;
    let dev = spawn(&[
        "--ws",
        &srv.ws_url,
        "--gap",
        "0",
        "--speed",
        "4",
        "--timeout",
        "20",
        "--quiet",
        "--out",
        &s(&out),
        "--turns",
        &wav,
        &wav,
    ]);
    let mut c = srv.accept().await;
    // 20 ms frames: the 43 packets the device holds are 0.86 s.
    c.hello("S", 16_000, 20).await;
    c.frames_until(10).await;
    c.tts("start").await;
    for p in opus_packets(60, 16_000, 20) {
        c.binary(p).await;
    }
    c.tts("stop").await;
    assert_eq!(
        c.json().await,
        json!({"session_id": "S", "type": "listen", "state": "start", "mode": "auto"})
    );
    let n = c.frames.len();
    c.frames_until(n + 10).await;
    c.tts("start").await;
    for p in opus_packets(3, 16_000, 20) {
        c.binary(p).await;
        sleep(Duration::from_millis(100)).await;
    }
    c.tts("stop").await;
    assert!(!c.until_gone().await);
    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    let turns = &sum.devices[0].turns;
    let p = &turns[0].pacing;
    assert_eq!(p.packets, 60);
    assert!(p.dropped_full >= 1 && p.dropped_full <= 60 - 43, "{p:?}");
    assert_eq!(turns[0].reply_samples, (60 - p.dropped_full) * 320);
    assert!(p.arrival_speed.is_none_or(|x| x > 2.0), "{p:?}");
    assert!(of(&events(&out), "dropped")
        .iter()
        .any(|e| e["reason"] == "decode queue full"),);
    // 20 ms packets 100 ms apart: the speaker runs dry before each of the last two.
    let p = &turns[1].pacing;
    assert_eq!((p.packets, p.underruns, p.dropped_full), (3, 2, 0), "{p:?}");
    assert!(p.underrun_s >= 2.0 * 0.08 - 1e-3, "{p:?}");
    assert!(p.arrival_speed.unwrap() < 0.5, "{p:?}");
}

#[tokio::test]
async fn protocol_version_2_from_ota_frames_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let wav = tone_wav(dir.path(), "q.wav", WAV_SAMPLES);
    let mut srv = server(|u| ota_reply(u, 2)).await;
    let dev = spawn(&[
        "--ota",
        &srv.ota_url,
        "--gap",
        "0",
        "--speed",
        "4",
        "--timeout",
        "20",
        "--quiet",
        &wav,
    ]);
    srv.ota_request().await;
    let mut c = srv.accept().await;
    assert_eq!(header(&c.headers, "protocol-version"), Some("2"));
    assert_eq!(
        c.text().await.unwrap(),
        HELLO.replace(r#""version":1"#, r#""version":2"#)
    );
    c.send(
        json!({"type": "hello", "transport": "websocket", "session_id": "S",
        "audio_params": {"sample_rate": 16_000, "frame_duration": 60}}),
    )
    .await;
    assert_eq!(c.json().await["state"], "start");
    c.frames_until(10).await;
    let mut packets = Vec::new();
    for (f, _) in &c.frames {
        assert_eq!(&f[..12], &[0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let len = u32::from_be_bytes(f[12..16].try_into().unwrap()) as usize;
        assert_eq!(len, f.len() - 16);
        packets.push(f[16..].to_vec());
    }
    assert!(uplink_rms(&packets)[2..8].iter().all(|&r| r > 1000.0));
    c.tts("start").await;
    for p in opus_packets(3, 16_000, 60) {
        let mut b = vec![0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&(p.len() as u32).to_be_bytes());
        b.extend_from_slice(&p);
        c.binary(b).await;
    }
    c.tts("stop").await;
    assert!(!c.until_gone().await);
    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    assert_eq!(sum.devices[0].protocol_version, 2);
    assert_eq!(sum.devices[0].turns[0].reply_samples, 3 * 960);
}

/// A device that talks to `script`'s server; its summary.
async fn failing(
    args: &[&str],
    script: impl AsyncFnOnce(&mut Conn),
) -> echokit_vdev::summary::Summary<echokit_vdev::xiaozhi::summary::DeviceSummary> {
    let dir = tempfile::tempdir().unwrap();
    let wav = tone_wav(dir.path(), "q.wav", WAV_SAMPLES);
    let mut srv = server(|u| ota_reply(u, 1)).await;
    let mut all = vec!["--ws", &srv.ws_url, "--gap", "0", "--speed", "4", "--quiet"];
    all.extend_from_slice(args);
    all.push(&wav);
    let dev = spawn(&all);
    let mut c = srv.accept().await;
    script(&mut c).await;
    dev.await.unwrap()
}

#[tokio::test]
async fn audio_outside_tts_start_stop_is_a_violation_unless_lenient() {
    let sum = failing(&[], async |c| {
        c.hello("S", 16_000, 60).await;
        c.binary(opus_packets(1, 16_000, 60).remove(0)).await;
        c.until_gone().await;
    })
    .await;
    assert_eq!(sum.exit_code, 3, "{sum:?}");
    let e = sum.devices[0].error.as_ref().unwrap();
    assert_eq!(e.kind, "protocol");
    assert!(e.message.contains("while not speaking"), "{e:?}");

    let sum = failing(&["--lenient"], async |c| {
        c.hello("S", 16_000, 60).await;
        c.binary(opus_packets(1, 16_000, 60).remove(0)).await;
        c.frames_until(10).await;
        c.tts("start").await;
        c.binary(opus_packets(1, 16_000, 60).remove(0)).await;
        c.tts("stop").await;
        c.until_gone().await;
    })
    .await;
    assert!(sum.ok, "{sum:?}");
    assert_eq!(sum.devices[0].turns[0].audio_not_speaking, 1);
    assert_eq!(sum.devices[0].turns[0].reply_samples, 960);
}

#[tokio::test]
async fn packets_longer_than_the_announced_frame_do_not_decode() {
    let sum = failing(&[], async |c| {
        c.hello("S", 16_000, 60).await;
        c.tts("start").await;
        c.binary(opus_packets(1, 16_000, 120).remove(0)).await;
        c.until_gone().await;
    })
    .await;
    assert_eq!(sum.exit_code, 3, "{sum:?}");
    let e = sum.devices[0].error.as_ref().unwrap();
    assert!(e.message.contains("does not decode"), "{e:?}");
}

#[tokio::test]
async fn a_hello_without_transport_is_a_violation_and_a_mid_turn_close_exit_5() {
    let sum = failing(&[], async |c| {
        assert_eq!(c.text().await.unwrap(), HELLO);
        c.send_raw(r#"{"type":"hello","session_id":"S"}"#).await;
        c.until_gone().await;
    })
    .await;
    assert_eq!(sum.exit_code, 3, "{sum:?}");
    assert!(sum.devices[0]
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("transport"));

    let sum = failing(&[], async |c| {
        c.hello("S", 16_000, 60).await;
        c.frames_until(3).await;
        c.ws.send(Message::close(None, "")).await.unwrap();
    })
    .await;
    assert_eq!(sum.exit_code, 5, "{sum:?}");
    assert_eq!(sum.devices[0].error.as_ref().unwrap().kind, "closed");
}

#[tokio::test]
async fn ota_failures_are_connect_errors() {
    fn not_found(_: &str) -> (u16, String) {
        (404, "{}".into())
    }
    fn mqtt(u: &str) -> (u16, String) {
        let body = json!({"websocket": {"url": u}, "mqtt": {"endpoint": "h:1883"}});
        (200, body.to_string())
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = tone_wav(dir.path(), "q.wav", WAV_SAMPLES);
    for (reply, want) in [
        (not_found as fn(&str) -> (u16, String), "HTTP 404"),
        (mqtt, "MQTT"),
    ] {
        let srv = server(reply).await;
        let sum = spawn(&["--ota", &srv.ota_url, "--quiet", &wav])
            .await
            .unwrap();
        assert_eq!(sum.exit_code, 2, "{sum:?}");
        let e = sum.devices[0].error.as_ref().unwrap();
        assert_eq!(e.kind, "connect");
        assert!(e.message.contains(want), "{e:?}");
    }
}

#[tokio::test]
async fn a_close_after_the_last_tts_stop_ends_the_run_normally() {
    let sum = failing(&[], async |c| {
        c.hello("S", 16_000, 60).await;
        c.frames_until(10).await;
        c.tts("start").await;
        for p in opus_packets(10, 16_000, 60) {
            c.binary(p).await;
        }
        c.tts("stop").await;
        c.ws.send(Message::close(None, "")).await.unwrap();
    })
    .await;
    assert!(sum.ok, "{sum:?}");
    assert_eq!(sum.devices[0].turns[0].reply_samples, 10 * 960);
}
