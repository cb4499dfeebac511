//! The device against an in-process scripted server (no network beyond
//! 127.0.0.1). Real time, but sped up with --speed; time assertions are only
//! lower bounds that the device's own clock guarantees.

mod common;

use std::process::Command;

use common::*;
use echokit_native::wav::read_wav;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn first_audio_latency_from_the_audible_end_when_trailing_silence_is_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // 1 s of speech, then 2 s of silence: the WAV's last sample would be in
    // frame 5 (40960..49152), the audible end is in frame 1 (8192..16384).
    let mut wav = speech(16_000);
    wav.extend(std::iter::repeat_n(0i16, 32_000));
    let wav = write_wav(dir.path(), "q.wav", &wav, 16_000, 1);
    let mut srv = server().await;
    let dev = spawn_device(&[
        "--server",
        &srv.url,
        "--no-hello",
        "--speed",
        "10",
        "--gap",
        "0",
        "--quiet",
        "--out",
        &s(&out),
        &s(&wav),
    ]);
    let mut c = srv.accept().await;
    c.start_chat().await;
    // The server ends the turn once the speech is in, long before the
    // trailing silence is.
    c.frames_until(16_384).await;
    c.send(&Ev::EndVad).await;
    c.send(&asr("what is the time")).await;
    segment(&mut c, "It is noon.", 2, &[1]).await;
    c.send(&Ev::EndResponse).await;

    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    let t = &sum.devices[0].turns[0];
    assert_eq!(t.speech_samples, 48_000);
    assert!(t.end_vad);
    assert_eq!(t.t_last_speech_frame, None, "{t:?}");
    let (start, ae, vad, fa) = (
        t.t_start_chat.unwrap(),
        t.t_audible_end.unwrap(),
        t.t_end_vad.unwrap(),
        t.t_first_audio.unwrap(),
    );
    assert!(start <= ae && ae <= vad && vad <= fa, "{t:?}");
    let lat = t.first_audio_latency.expect("first_audio_latency present");
    assert!(lat >= 0.0, "{t:?}");
    assert!(lat < fa - start, "{t:?}");
    assert!((lat - (fa - ae)).abs() < 1e-5, "{t:?}");
    // The audible_end event marks the second frame.
    let ev = events(&out);
    let n = names(&ev);
    let frames_before = n
        .iter()
        .take_while(|x| *x != "audible_end")
        .filter(|x| *x == "frame")
        .count();
    assert_eq!(frames_before, 2, "{n:?}");
    assert!(!n.iter().any(|x| x == "last_speech_frame"), "{n:?}");
}

#[tokio::test]
async fn full_turn_summary_events_and_reply_wav() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // 1 s of speech at 44.1 kHz stereo: converted to 16 kHz mono.
    let sp = speech(44_100);
    let stereo: Vec<i16> = sp.iter().flat_map(|&x| [x, x]).collect();
    let wav = write_wav(dir.path(), "q.wav", &stereo, 44_100, 2);
    let mut srv = server().await;
    let dev = spawn_device(&[
        "--server",
        &srv.url,
        "--no-hello",
        "--speed",
        "10",
        "--gap",
        "0",
        "--quiet",
        "--out",
        &s(&out),
        &s(&wav),
    ]);
    let mut c = srv.accept().await;
    assert_eq!(
        c.uri,
        "/ws/02ec00000001?reconnect=true&opus=true&vowel=true&stream_asr=true"
    );
    assert_eq!(
        c.extensions.as_deref(),
        Some("permessage-deflate; client_max_window_bits")
    );
    assert_eq!(c.start_chat().await, r#"{"event":"StartChat"}"#);
    let frames = c.frames_until(16_000 + 8192).await;
    // Every frame is 8192 samples; the first carries the pre-roll, i.e. the
    // WAV from its first sample; the speech ends inside frame 2 (16000 < 16384).
    assert!(frames.iter().all(|f| f.len() == 8192));
    assert!(frames[0].iter().all(|&x| x != 0));
    assert!(frames[1][16_000 - 8192..].iter().all(|&x| x == 0));
    assert!(frames[2].iter().all(|&x| x == 0));
    c.send(&Ev::EndVad).await;
    c.send(&asr("what is the time")).await;
    segment(&mut c, "It is noon.", 3, &[1, 2, 0]).await;
    segment(&mut c, "Bye.", 2, &[5]).await;
    c.send(&Ev::EndResponse).await;

    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    assert_eq!(sum.exit_code, 0);
    let d = &sum.devices[0];
    assert_eq!(d.id, "02ec00000001");
    assert_eq!(d.hello_bytes, 0);
    let t = &d.turns[0];
    assert_eq!(t.turn, 1);
    assert_eq!(t.wav, s(&wav));
    assert_eq!(t.speech_samples, 16_000);
    assert_eq!(t.asr, ["what is the time"]);
    assert!(t.end_vad && !t.barged_in);
    assert_eq!(t.segments.len(), 2);
    assert_eq!(t.segments[0].text, "It is noon.");
    assert_eq!(
        (t.segments[0].samples, t.segments[0].packets),
        (3 * 1920, 3)
    );
    assert_eq!(t.segments[0].vowels, [1, 2, 0]);
    assert_eq!(t.segments[1].vowels, [5, 5]);
    assert_eq!(t.reply_samples, 5 * 1920);
    let reply = std::fs::read(t.reply_wav.as_ref().unwrap()).unwrap();
    let (pcm, info) = read_wav(&reply).unwrap();
    assert_eq!(
        (info.sample_rate, info.channels, pcm.len()),
        (16_000, 1, 5 * 1920)
    );
    assert!(pcm.iter().any(|&x| x.abs() > 0.05), "the tone decoded");
    let (a, b, c_, d_, e) = (
        t.t_start_chat.unwrap(),
        t.t_last_speech_frame.unwrap(),
        t.t_end_vad.unwrap(),
        t.t_first_audio.unwrap(),
        t.t_end_response.unwrap(),
    );
    assert!(a <= b && b <= c_ && c_ <= d_ && d_ <= e, "{t:?}");
    // No trailing silence: the audible end is the WAV's end.
    let ae = t.t_audible_end.unwrap();
    assert!(a <= ae && ae <= b, "{t:?}");
    assert!((t.first_audio_latency.unwrap() - (d_ - ae)).abs() < 1e-5);

    // summary.json is the same document.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(doc, serde_json::to_value(&sum).unwrap());

    let ev = events(&out);
    let n = names(&ev);
    let pos = |name: &str| n.iter().position(|x| x == name).unwrap();
    for w in [
        "connect",
        "connected",
        "start_chat",
        "audible_end",
        "last_speech_frame",
        "end_vad",
        "asr",
        "start_audio",
        "first_audio",
        "end_audio",
        "download_speed",
        "playback_done",
        "end_response",
    ]
    .windows(2)
    {
        assert!(pos(w[0]) < pos(w[1]), "{} before {}: {n:?}", w[0], w[1]);
    }
    assert_eq!(n.iter().filter(|x| *x == "audio").count(), 5);
    assert_eq!(n.iter().filter(|x| *x == "playback_done").count(), 2);
    // Lines are in time order and carry device/conn/turn.
    assert!(ev
        .windows(2)
        .all(|w| w[0]["t"].as_f64() <= w[1]["t"].as_f64()));
    let asr_ev = first(&ev, "asr");
    assert_eq!(asr_ev["text"], "what is the time");
    assert_eq!(
        (asr_ev["conn"].as_u64(), asr_ev["turn"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(first(&ev, "connect")["turn"], 0);
    let audio = first(&ev, "audio");
    assert_eq!(
        (audio["samples"].as_u64(), audio["vowel"].as_u64()),
        (Some(1920), Some(1))
    );
    assert_eq!(first(&ev, "frame")["samples"], 8192);
    assert_eq!(first(&ev, "end_audio")["samples"], 3 * 1920);
}

#[tokio::test]
async fn end_audio_wait_delays_reading_the_next_event() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let wav = write_wav(dir.path(), "q.wav", &speech(4000), 16_000, 1);
    let mut srv = server().await;
    let dev = spawn_device(&[
        "--server",
        &srv.url,
        "--no-hello",
        "--speed",
        "4",
        "--gap",
        "0",
        "--quiet",
        "--out",
        &s(&out),
        &s(&wav),
    ]);
    let mut c = srv.accept().await;
    c.start_chat().await;
    c.frames_until(4000).await;
    c.send(&Ev::EndVad).await;
    // 10 packets = 1.2 s of audio = 0.3 s at speed 4; EndResponse right after.
    segment(&mut c, "One.", 10, &[0]).await;
    c.send(&Ev::EndResponse).await;
    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    let ev = events(&out);
    let t = |name: &str| first(&ev, name)["t"].as_f64().unwrap();
    let n = names(&ev);
    let done = n.iter().position(|x| x == "playback_done").unwrap();
    assert_eq!(n[done + 1], "end_response", "{n:?}");
    // Playback began with the first packet; EndResponse was not read before
    // the 0.3 s of (paced) audio had played.
    assert!(t("end_response") >= t("first_audio") + 0.3 - 1e-3, "{ev:?}");
    assert!(t("playback_done") >= t("first_audio") + 0.3 - 1e-3);
}

#[tokio::test]
async fn boot_stores_hello_presses_k0_and_drains_the_boot_socket() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let wav = write_wav(dir.path(), "q.wav", &speech(3000), 16_000, 1);
    let mut srv = server().await;
    let dev = spawn_device(&[
        "--server",
        &srv.url,
        "--speed",
        "4",
        "--gap",
        "0",
        "--quiet",
        "--out",
        &s(&out),
        "--turns",
        &s(&wav),
        &s(&wav),
    ]);
    let mut boot = srv.accept().await;
    assert_eq!(
        boot.uri,
        "/ws/02ec00000001?opus=true&vowel=true&stream_asr=true"
    );
    // 3200 bytes of "hello" = 1600 samples = 100 ms (25 ms at speed 4).
    let hello: Vec<u8> = (0..3200u32).map(|i| (i % 251) as u8).collect();
    boot.send(&Ev::HelloStart).await;
    boot.send(&Ev::HelloChunk {
        data: hello[..2048].to_vec(),
    })
    .await;
    boot.send(&Ev::HelloChunk {
        data: hello[2048..].to_vec(),
    })
    .await;
    boot.send(&Ev::HelloEnd).await;
    let mut c = srv.accept().await;
    assert_eq!(
        c.uri,
        "/ws/02ec00000001?reconnect=true&opus=true&vowel=true&stream_asr=true"
    );
    // The pre-empted boot socket gets EndResponse and is closed.
    boot.send(&Ev::EndResponse).await;
    boot.ws.close().await.unwrap();
    serve_turn(&mut c, 3000, "one", 2).await;
    serve_turn(&mut c, 3000, "two", 1).await;
    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    let d = &sum.devices[0];
    assert_eq!(d.hello_bytes, 3200);
    assert_eq!(
        std::fs::read(out.join("02ec00000001/hello.wav")).unwrap(),
        hello
    );
    assert_eq!(d.turns.len(), 2);
    assert_eq!(d.turns[1].asr, ["two"]);
    assert_eq!(d.turns[1].reply_samples, 1920);
    let ev = events(&out);
    let n = names(&ev);
    assert_eq!(n.iter().filter(|x| *x == "hello_chunk").count(), 2);
    assert_eq!(first(&ev, "hello_end")["bytes"], 3200);
    // K0 after HelloEnd, then the reconnect as conn 2.
    let k0 = n.iter().position(|x| x == "k0").unwrap();
    assert_eq!(n[k0 - 1], "hello_end");
    assert_eq!(ev[k0 + 1]["event"], "connect");
    assert_eq!(ev[k0 + 1]["conn"], 2);
    // The boot socket's EndResponse and close were logged as conn 1.
    assert!(ev
        .iter()
        .any(|e| e["event"] == "end_response" && e["conn"] == 1));
    assert!(ev.iter().any(|e| e["event"] == "close" && e["conn"] == 1));
    // The hello was played (25 ms) before listening; the turn's StartChat
    // comes a pre-roll (64 ms at speed 4) after that.
    let t_connected2 = ev
        .iter()
        .find(|e| e["event"] == "connected" && e["conn"] == 2)
        .unwrap()["t"]
        .as_f64()
        .unwrap();
    assert!(first(&ev, "start_chat")["t"].as_f64().unwrap() >= t_connected2 + 0.025 + 0.064 - 1e-3);
    // Turn 2 events carry turn 2.
    assert!(ev
        .iter()
        .any(|e| e["event"] == "asr" && e["turn"] == 2 && e["text"] == "two"));
}

async fn violation_turn(bad: tokio_websockets::Message, lenient: bool) -> i32 {
    let dir = tempfile::tempdir().unwrap();
    let wav = write_wav(dir.path(), "q.wav", &speech(3000), 16_000, 1);
    let mut srv = server().await;
    let mut args = vec![
        "--server".to_string(),
        srv.url.clone(),
        "--no-hello".into(),
        "--speed".into(),
        "10".into(),
        "--gap".into(),
        "0".into(),
        "--quiet".into(),
        s(&wav),
    ];
    if lenient {
        args.push("--lenient".into());
    }
    let args: Vec<&str> = args.iter().map(|x| x.as_str()).collect();
    let dev = spawn_device(&args);
    let mut c = srv.accept().await;
    c.start_chat().await;
    c.frames_until(3000).await;
    c.send(&Ev::EndVad).await;
    c.ws.send(bad).await.unwrap();
    c.send(&asr("hi")).await;
    segment(&mut c, "Ok.", 1, &[0]).await;
    c.send(&Ev::EndResponse).await;
    let sum = dev.await.unwrap();
    if lenient || sum.exit_code == 0 {
        assert_eq!(sum.devices[0].turns[0].asr, ["hi"]);
        assert_eq!(sum.devices[0].turns[0].reply_samples, 1920);
    } else {
        assert_eq!(sum.devices[0].error.as_ref().unwrap().kind, "protocol");
    }
    sum.exit_code
}

#[tokio::test]
async fn undecodable_frame_is_exit_3_and_lenient_survives() {
    let garbage = tokio_websockets::Message::binary(vec![0xc1u8, 0x00, 0x01]);
    assert_eq!(violation_turn(garbage.clone(), false).await, 3);
    assert_eq!(violation_turn(garbage, true).await, 0);
    // A server event the firmware does not know (docs/protocol.md#the-events) is dropped, as the
    // firmware does, even in strict mode: not a violation.
    let choices = msg(&Ev::Choices {
        message: "m".into(),
        items: vec!["a".into()],
    });
    assert_eq!(violation_turn(choices, false).await, 0);
}

#[tokio::test]
async fn text_frame_is_exit_3_and_lenient_survives() {
    let text = tokio_websockets::Message::text("{\"event\":\"EndVad\"}");
    assert_eq!(violation_turn(text.clone(), false).await, 3);
    assert_eq!(violation_turn(text, true).await, 0);
}

#[tokio::test]
async fn bad_audio_is_exit_3() {
    // Audio outside a segment, a bad vowel, an undecodable Opus packet.
    let pkt = opus_packets(1).remove(0);
    let outside = msg(&Ev::AudioChunkWithVowel {
        data: pkt.clone(),
        vowel: 0,
    });
    assert_eq!(violation_turn(outside.clone(), false).await, 3);
    assert_eq!(violation_turn(outside, true).await, 0);
    let end_audio = msg(&Ev::EndAudio);
    assert_eq!(violation_turn(end_audio, false).await, 3);
}

#[tokio::test]
async fn bad_vowel_and_bad_opus_inside_a_segment_are_exit_3() {
    for (data, vowel) in [
        (opus_packets(1).remove(0), 6u8),
        (vec![0xffu8, 0xff, 0xff], 0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let wav = write_wav(dir.path(), "q.wav", &speech(3000), 16_000, 1);
        let mut srv = server().await;
        let dev = spawn_device(&[
            "--server",
            &srv.url,
            "--no-hello",
            "--speed",
            "10",
            "--gap",
            "0",
            "--quiet",
            &s(&wav),
        ]);
        let mut c = srv.accept().await;
        c.start_chat().await;
        c.frames_until(3000).await;
        c.send(&Ev::EndVad).await;
        c.send(&start_audio("x")).await;
        c.send(&Ev::AudioChunkWithVowel { data, vowel }).await;
        let sum = dev.await.unwrap();
        assert_eq!(sum.exit_code, 3, "{sum:?}");
    }
}

#[tokio::test]
async fn turn_timeout_is_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let wav = write_wav(dir.path(), "q.wav", &speech(3000), 16_000, 1);
    let mut srv = server().await;
    let dev = spawn_device(&[
        "--server",
        &srv.url,
        "--no-hello",
        "--gap",
        "0",
        "--speed",
        "2",
        "--timeout",
        "0.4",
        "--quiet",
        &s(&wav),
    ]);
    let mut c = srv.accept().await;
    c.start_chat().await;
    // Answer nothing (but keep reading).
    let reader = tokio::spawn(async move { while c.recv().await.is_some() {} });
    let sum = dev.await.unwrap();
    assert_eq!(sum.exit_code, 4, "{sum:?}");
    let e = sum.devices[0].error.as_ref().unwrap();
    assert!(e.message.contains("no EndResponse within 0.4 s"), "{e:?}");
    let t = &sum.devices[0].turns[0];
    assert!(t.t_start_chat.is_some() && t.t_end_response.is_none());
    reader.abort();
}

#[tokio::test]
async fn ten_seconds_without_asr_is_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let wav = write_wav(dir.path(), "q.wav", &speech(3000), 16_000, 1);
    let mut srv = server().await;
    let dev = spawn_device(&[
        "--server",
        &srv.url,
        "--no-hello",
        "--gap",
        "0",
        "--speed",
        "50",
        "--quiet",
        &s(&wav),
    ]);
    let mut c = srv.accept().await;
    c.start_chat().await;
    // Never an ASR: the device gives up after > 10 s of audio (20 frames).
    let frames = c.count_frames().await;
    let sum = dev.await.unwrap();
    assert_eq!(sum.exit_code, 4, "{sum:?}");
    assert!(sum.devices[0]
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("10 s"));
    assert_eq!(frames, 160_000 / 8192 + 1);
}

#[tokio::test]
async fn refused_connection_is_exit_2() {
    // A port with nothing listening.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let dir = tempfile::tempdir().unwrap();
    let wav = write_wav(dir.path(), "q.wav", &speech(3000), 16_000, 1);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let sum = spawn_device(&["--server", &url, "--quiet", &s(&wav)])
        .await
        .unwrap();
    assert_eq!(sum.exit_code, 2, "{sum:?}");
    assert_eq!(sum.devices[0].error.as_ref().unwrap().kind, "connect");
}

#[tokio::test]
async fn http_404_is_exit_2_after_three_reconnect_attempts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counter = tokio::spawn(async move {
        let mut n = 0;
        while let Ok(Ok((mut tcp, _))) =
            tokio::time::timeout(std::time::Duration::from_secs(3), listener.accept()).await
        {
            n += 1;
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
        n
    });
    let dir = tempfile::tempdir().unwrap();
    let wav = write_wav(dir.path(), "q.wav", &speech(3000), 16_000, 1);
    let url = format!("ws://127.0.0.1:{port}/ws/");
    let sum = spawn_device(&["--server", &url, "--no-hello", "--quiet", &s(&wav)])
        .await
        .unwrap();
    assert_eq!(sum.exit_code, 2, "{sum:?}");
    let msg = &sum.devices[0].error.as_ref().unwrap().message;
    assert!(msg.contains("404") && msg.contains("3 attempts"), "{msg}");
    assert_eq!(counter.await.unwrap(), 3);
}

#[tokio::test]
async fn server_dropping_mid_turn_is_exit_5() {
    let dir = tempfile::tempdir().unwrap();
    let wav = write_wav(dir.path(), "q.wav", &speech(3000), 16_000, 1);
    let mut srv = server().await;
    let dev = spawn_device(&[
        "--server",
        &srv.url,
        "--no-hello",
        "--gap",
        "0",
        "--speed",
        "10",
        "--quiet",
        &s(&wav),
    ]);
    let mut c = srv.accept().await;
    c.start_chat().await;
    c.frames_until(3000).await;
    c.send(&Ev::EndVad).await;
    drop(c);
    let sum = dev.await.unwrap();
    assert_eq!(sum.exit_code, 5, "{sum:?}");
    let e = sum.devices[0].error.as_ref().unwrap();
    assert!(e.message.contains("in the middle of turn 1"), "{e:?}");
}

#[tokio::test]
async fn barge_in_reconnects_and_sends_the_captured_audio_as_one_frame() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sp1 = speech(3000);
    let sp2: Vec<i16> = speech(20_000).iter().map(|x| -x).collect();
    let w1 = write_wav(dir.path(), "a.wav", &sp1, 16_000, 1);
    let w2 = write_wav(dir.path(), "b.wav", &sp2, 16_000, 1);
    let mut srv = server().await;
    let dev = spawn_device(&[
        "--server",
        &srv.url,
        "--no-hello",
        "--gap",
        "0",
        "--speed",
        "4",
        "--barge-in",
        "0.2",
        "--quiet",
        "--out",
        &s(&out),
        "--turns",
        &s(&w1),
        &s(&w2),
    ]);
    let mut c1 = srv.accept().await;
    c1.start_chat().await;
    c1.frames_until(3000).await;
    c1.send(&Ev::EndVad).await;
    c1.send(&asr("one")).await;
    // A long reply (30 packets = 3.6 s, 0.9 s at speed 4) without EndAudio.
    c1.send(&start_audio("A long answer")).await;
    for p in opus_packets(30) {
        c1.send(&Ev::AudioChunkWithVowel { data: p, vowel: 0 })
            .await;
    }
    // The device barges in on a new connection.
    let mut c2 = srv.accept().await;
    assert_eq!(
        c2.uri,
        "/ws/02ec00000001?reconnect=true&opus=true&vowel=true&stream_asr=true"
    );
    c1.send(&Ev::EndResponse).await; // pre-empted
    drop(c1);
    assert_eq!(c2.start_chat().await, r#"{"event":"StartChat"}"#);
    let frames = c2.frames_until(20_000).await;
    // > 0.6 s accumulated (38 blocks) plus the next block, in one frame,
    // starting at the first sample of turn 2's speech.
    assert_eq!(frames[0].len(), 39 * 256);
    assert_eq!(frames[0][..], sp2[..39 * 256]);
    assert_eq!(frames[1].len(), 8192);
    c2.send(&Ev::EndVad).await;
    c2.send(&asr("two")).await;
    segment(&mut c2, "Ok.", 1, &[0]).await;
    c2.send(&Ev::EndResponse).await;
    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    let t = &sum.devices[0].turns;
    assert!(!t[0].barged_in && t[1].barged_in);
    assert!(t[0].t_end_response.is_none() && t[1].t_end_response.is_some());
    assert_eq!(t[1].asr, ["two"]);
    let ev = events(&out);
    let n = names(&ev);
    let b = n.iter().position(|x| x == "barge_in").unwrap();
    assert_eq!(&n[b + 1..b + 4], ["connect", "connected", "start_chat"]);
    assert_eq!(ev[b + 3]["conn"], 2);
    // The speech started 0.2 s / 4 after the first audio; the barge-in
    // came > 0.6 s of audio (0.15 s at speed 4) later.
    let t_first = first(&ev, "first_audio")["t"].as_f64().unwrap();
    assert!(ev[b]["t"].as_f64().unwrap() >= t_first + 0.05 + 0.15 - 1e-3);
}

#[tokio::test]
async fn several_devices_run_at_once_with_their_own_ids() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let wav = write_wav(dir.path(), "q.wav", &speech(3000), 16_000, 1);
    let mut srv = server().await;
    let dev = spawn_device(&[
        "--server",
        &srv.url,
        "--no-hello",
        "--gap",
        "0",
        "--speed",
        "10",
        "--devices",
        "3",
        "--id",
        "02ec000000fe",
        "--quiet",
        "--out",
        &s(&out),
        &s(&wav),
    ]);
    let mut servers = Vec::new();
    for _ in 0..3 {
        let mut c = srv.accept().await;
        servers.push(tokio::spawn(async move {
            let uri = c.uri.clone();
            serve_turn(&mut c, 3000, "hi", 2).await;
            uri
        }));
    }
    let mut uris = Vec::new();
    for h in servers {
        uris.push(h.await.unwrap());
    }
    uris.sort();
    assert!(uris[0].starts_with("/ws/02ec000000fe?"));
    assert!(uris[1].starts_with("/ws/02ec000000ff?"));
    assert!(uris[2].starts_with("/ws/02ec00000100?"));
    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    let ids: Vec<&str> = sum.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["02ec000000fe", "02ec000000ff", "02ec00000100"]);
    for d in &sum.devices {
        assert!(out.join(&d.id).join("reply-1.wav").exists());
        assert_eq!(d.turns[0].reply_samples, 2 * 1920);
    }
}

#[tokio::test]
async fn accepted_extension_is_a_protocol_violation() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let b = tokio_websockets::ServerBuilder::new()
            .add_header(
                http::header::SEC_WEBSOCKET_EXTENSIONS,
                http::HeaderValue::from_static("permessage-deflate"),
            )
            .unwrap();
        let (_req, ws) = b.accept(tcp).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        drop(ws);
    });
    let dir = tempfile::tempdir().unwrap();
    let wav = write_wav(dir.path(), "q.wav", &speech(3000), 16_000, 1);
    let url = format!("ws://127.0.0.1:{port}/ws/");
    let sum = spawn_device(&["--server", &url, "--no-hello", "--quiet", &s(&wav)])
        .await
        .unwrap();
    assert_eq!(sum.exit_code, 3, "{sum:?}");
    assert!(sum.devices[0]
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("extension"));
}

/// The binary: usage errors exit 1, stdout is the summary JSON.
#[test]
fn binary_exit_codes_and_stdout() {
    let exe = env!("CARGO_BIN_EXE_echokit-vdev");
    let out = Command::new(exe)
        .args(["--block", "100", "x.wav"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["exit_code"], 1);
    assert_eq!(doc["error"]["kind"], "usage");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--block"));

    let out = Command::new(exe)
        .args(["--no-such-option"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    let out = Command::new(exe)
        .args(["/no/such/file.wav"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/no/such/file.wav"));

    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let dir = tempfile::tempdir().unwrap();
    let wav = write_wav(dir.path(), "q.wav", &speech(3000), 16_000, 1);
    let out = Command::new(exe)
        .args([
            "--server",
            &format!("ws://127.0.0.1:{port}/ws/"),
            "--quiet",
            &s(&wav),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["devices"][0]["error"]["kind"], "connect");
}

#[tokio::test]
async fn reconnect_between_turns_closes_and_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let wav = write_wav(dir.path(), "q.wav", &speech(3000), 16_000, 1);
    let mut srv = server().await;
    let dev = spawn_device(&[
        "--server",
        &srv.url,
        "--no-hello",
        "--gap",
        "0",
        "--speed",
        "10",
        "--reconnect-between-turns",
        "--quiet",
        "--out",
        &s(&out),
        "--turns",
        &s(&wav),
        &s(&wav),
    ]);
    let mut c1 = srv.accept().await;
    serve_turn(&mut c1, 3000, "one", 1).await;
    // K0 → Idle: the device closes its socket (a Close frame, nothing more).
    assert!(c1.recv().await.is_none());
    let mut c2 = srv.accept().await;
    assert!(c2.uri.contains("?reconnect=true&"));
    serve_turn(&mut c2, 3000, "two", 1).await;
    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    let ev = events(&out);
    let n = names(&ev);
    assert_eq!(n.iter().filter(|x| *x == "k0").count(), 3, "{n:?}");
    let e1 = n.iter().position(|x| x == "end_response").unwrap();
    assert_eq!(&n[e1 + 1..e1 + 5], ["k0", "k0", "connect", "connected"]);
    assert_eq!(first(&ev, "asr")["conn"], 1);
    assert!(ev
        .iter()
        .any(|e| e["event"] == "asr" && e["conn"] == 2 && e["turn"] == 2));
}

#[tokio::test]
async fn stray_end_vad_and_end_response_before_start_chat_do_not_swallow_the_turn() {
    let dir = tempfile::tempdir().unwrap();
    let wav = write_wav(dir.path(), "q.wav", &speech(3000), 16_000, 1);
    let mut srv = server().await;
    let dev = spawn_device(&[
        "--server",
        &srv.url,
        "--no-hello",
        "--gap",
        "0",
        "--speed",
        "1",
        "--quiet",
        &s(&wav),
    ]);
    let mut c = srv.accept().await;
    // During the 256 ms pre-roll (no StartChat yet).
    c.send(&Ev::EndVad).await;
    c.send(&Ev::EndResponse).await;
    // (Were the turn swallowed, the device would wait forever: bound it.)
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        serve_turn(&mut c, 3000, "hi", 1),
    )
    .await
    .expect("the turn starts despite the stray events");
    let sum = dev.await.unwrap();
    assert!(sum.ok, "{sum:?}");
    assert_eq!(sum.devices[0].turns[0].asr, ["hi"]);
}
