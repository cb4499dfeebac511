//! The boot-time OTA call: `POST <ota url>` with the firmware's headers and its system-info body,
//! and what the device takes from the answer (the WebSocket URL, token and protocol version).

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::summary::{DeviceError, ErrorKind};

/// Bounds the whole OTA exchange (not a firmware constant: it retries with growing waits).
const OTA_TIMEOUT: Duration = Duration::from_secs(10);

/// Who the device says it is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Station MAC, lowercase, colon-separated (`Device-Id`).
    pub mac: String,
    /// The UUID made on first boot (`Client-Id`).
    pub uuid: String,
    /// Board type and name (`bread-compact-wifi`).
    pub board: String,
    /// Firmware version (`application.version`).
    pub version: String,
    /// `Accept-Language` and `language` (`zh-CN`).
    pub language: String,
}

impl Identity {
    pub fn user_agent(&self) -> String {
        format!("{}/{}", self.board, self.version)
    }

    /// The system-info JSON of the OTA body (and of the `self.get_system_info` tool): the
    /// firmware's keys in its order, with the values of an ESP32-S3 Wi-Fi board.
    pub fn system_info(&self) -> Value {
        json!({
            "version": 2,
            "language": self.language,
            "flash_size": 16_777_216,
            "minimum_free_heap_size": "8318916",
            "mac_address": self.mac,
            "uuid": self.uuid,
            "chip_model_name": "esp32s3",
            "chip_info": {"model": 9, "cores": 2, "revision": 2, "features": 18},
            "application": {
                "name": "xiaozhi",
                "version": self.version,
                "compile_time": "Aug  8 2026T08:33:45Z",
                "idf_version": "v5.5.1",
                "elf_sha256": "0".repeat(64),
            },
            "partition_table": [
                {"label": "nvs", "type": 1, "subtype": 2, "address": 36_864, "size": 16_384},
                {"label": "otadata", "type": 1, "subtype": 0, "address": 53_248, "size": 8_192},
                {"label": "phy_init", "type": 1, "subtype": 1, "address": 61_440, "size": 4_096},
                {"label": "ota_0", "type": 0, "subtype": 16, "address": 131_072, "size": 4_128_768},
                {"label": "ota_1", "type": 0, "subtype": 17, "address": 4_259_840, "size": 4_128_768},
                {"label": "assets", "type": 1, "subtype": 130, "address": 8_388_608, "size": 8_388_608},
            ],
            "ota": {"label": "ota_0"},
            "display": {"monochrome": true, "width": 128, "height": 32},
            "board": {
                "type": self.board,
                "name": self.board,
                "manufacturer": "",
                "ssid": "xiaozhi-vdev",
                "rssi": -50,
                "channel": 1,
                "ip": "127.0.0.1",
                "mac": self.mac,
            },
        })
    }
}

/// What the device keeps from the OTA reply (NVS namespace `websocket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    pub url: String,
    pub token: String,
    /// Binary protocol version; 1 when the reply has none.
    pub version: u32,
}

/// The OTA reply as the device reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct OtaReply {
    pub ws: WsConfig,
    /// `firmware` offers a newer version (or `force: 1`): the device would flash it and reboot.
    pub upgrade_offered: bool,
    /// The reply body.
    pub body: Value,
}

fn connect_err(m: impl Into<String>) -> DeviceError {
    DeviceError::new(ErrorKind::Connect, m)
}

/// The firmware's version comparison: dot-separated integers left to right, then length.
pub fn is_newer(current: &str, offered: &str) -> bool {
    let parse = |v: &str| -> Vec<i64> {
        v.split('.')
            .map(|p| {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap_or(0)
            })
            .collect()
    };
    let (c, n) = (parse(current), parse(offered));
    for (a, b) in c.iter().zip(&n) {
        if b != a {
            return b > a;
        }
    }
    n.len() > c.len()
}

/// Reads an OTA answer: HTTP 200 with a JSON object, a `websocket` section and no `mqtt` or
/// `activation` one (the device would use MQTT+UDP, or stay in Activating polling `/activate`).
pub fn read_reply(status: StatusCode, body: &[u8], current: &str) -> Result<OtaReply, DeviceError> {
    if status != StatusCode::OK {
        return Err(connect_err(format!(
            "OTA answered HTTP {status} (the firmware needs 200)"
        )));
    }
    let body: Value = serde_json::from_slice(body).map_err(|e| {
        DeviceError::new(
            ErrorKind::Protocol,
            format!("the OTA reply is not JSON ({e})"),
        )
    })?;
    if body.get("mqtt").is_some_and(Value::is_object) {
        return Err(connect_err(
            "the OTA reply has an mqtt section: the device would use MQTT+UDP, which xiaozhi-vdev does not speak",
        ));
    }
    let Some(ws) = body.get("websocket").filter(|w| w.is_object()) else {
        return Err(connect_err(
            "the OTA reply has no websocket section: the device would fall back to MQTT",
        ));
    };
    if let Some(a) = body.get("activation").filter(|a| a.is_object()) {
        if a.get("code").is_some_and(Value::is_string)
            || a.get("challenge").is_some_and(Value::is_string)
        {
            return Err(connect_err(
                "the OTA reply asks for activation: the device would stay in Activating and poll /activate, which xiaozhi-vdev does not do",
            ));
        }
    }
    let url = ws.get("url").and_then(Value::as_str).unwrap_or_default();
    if url.is_empty() {
        return Err(connect_err("the OTA reply's websocket section has no url"));
    }
    let version = match ws.get("version").and_then(Value::as_f64) {
        Some(v) if v >= 1.0 => v as u32,
        _ => 1,
    };
    let upgrade_offered = body
        .get("firmware")
        .filter(|f| f.is_object())
        .and_then(|f| {
            let v = f.get("version")?.as_str()?;
            f.get("url")?.as_str()?;
            let force = f.get("force").and_then(Value::as_f64) == Some(1.0);
            Some(force || is_newer(current, v))
        })
        .unwrap_or(false);
    Ok(OtaReply {
        ws: WsConfig {
            url: url.to_string(),
            token: ws
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            version,
        },
        upgrade_offered,
        body,
    })
}

/// `POST url` with the firmware's headers and body; the status and body of the answer.
pub async fn post(url: &str, id: &Identity) -> Result<(StatusCode, Bytes), DeviceError> {
    timeout(OTA_TIMEOUT, post_inner(url, id))
        .await
        .unwrap_or_else(|_| {
            Err(connect_err(format!(
                "OTA {url}: no answer within {} s",
                OTA_TIMEOUT.as_secs()
            )))
        })
}

async fn post_inner(url: &str, id: &Identity) -> Result<(StatusCode, Bytes), DeviceError> {
    let fail = |e: &dyn std::fmt::Display| connect_err(format!("OTA {url}: {e}"));
    let uri: Uri = url.parse().map_err(|e| fail(&e))?;
    let host = uri.host().ok_or_else(|| fail(&"no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| fail(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| fail(&e))?;
    let conn = tokio::spawn(conn);
    // The firmware's Host: the port only when it is not the default.
    let host_header = match uri.port_u16() {
        Some(p) if p != 80 => format!("{host}:{p}"),
        _ => host.to_string(),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let body = id.system_info().to_string();
    let req = Request::post(path)
        .header(header::HOST, host_header)
        .header("Activation-Version", "1")
        .header("Device-Id", &id.mac)
        .header("Client-Id", &id.uuid)
        .header(header::USER_AGENT, id.user_agent())
        .header(header::ACCEPT_LANGUAGE, &id.language)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| fail(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| fail(&e))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(&e))?
        .to_bytes();
    conn.abort();
    Ok((status, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comparison_is_the_firmwares() {
        assert!(is_newer("2.4.2", "2.4.3"));
        assert!(is_newer("2.4.2", "2.10.0"));
        assert!(is_newer("2.4.2", "2.4.2.1"));
        assert!(!is_newer("2.4.2", "2.4.2"));
        assert!(!is_newer("2.4.2", "2.3.9"));
        assert!(!is_newer("2.4.2", "1.99"));
    }

    fn ok(body: Value) -> Result<OtaReply, DeviceError> {
        read_reply(StatusCode::OK, body.to_string().as_bytes(), "2.4.2")
    }

    #[test]
    fn reply_rules() {
        let r = ok(
            json!({"websocket": {"url": "ws://h:1/xiaozhi/v1/", "token": "t", "version": 3},
            "firmware": {"version": "2.4.2", "url": ""}}),
        )
        .unwrap();
        assert_eq!(
            r.ws,
            WsConfig {
                url: "ws://h:1/xiaozhi/v1/".into(),
                token: "t".into(),
                version: 3
            }
        );
        assert!(!r.upgrade_offered);
        // No token, no version: empty token, version 1.
        let r = ok(json!({"websocket": {"url": "ws://h/x/"}})).unwrap();
        assert_eq!((r.ws.token.as_str(), r.ws.version), ("", 1));
        // A string version is stored as a string: the int read gives the default.
        assert_eq!(
            ok(json!({"websocket": {"url": "ws://h/", "version": "2"}}))
                .unwrap()
                .ws
                .version,
            1
        );
        assert!(ok(json!({"websocket": {"url": "ws://h/"}, "firmware": {"version": "3.0.0", "url": "http://x/f.bin"}}))
            .unwrap()
            .upgrade_offered);
        assert!(ok(json!({"websocket": {"url": "ws://h/"}, "firmware": {"version": "1.0.0", "url": "", "force": 1}}))
            .unwrap()
            .upgrade_offered);
        let err = |v: Value| ok(v).unwrap_err();
        assert!(
            err(json!({"websocket": {"url": "ws://h/"}, "mqtt": {"endpoint": "h"}}))
                .message
                .contains("MQTT")
        );
        assert!(err(json!({"success": false}))
            .message
            .contains("no websocket"));
        assert!(err(json!({"websocket": {"token": ""}}))
            .message
            .contains("no url"));
        assert!(
            err(json!({"websocket": {"url": "ws://h/"}, "activation": {"code": "123456"}}))
                .message
                .contains("activation")
        );
        let e = read_reply(StatusCode::NOT_FOUND, b"{}", "2.4.2").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Connect);
        let e = read_reply(StatusCode::OK, b"<html>", "2.4.2").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
    }

    fn identity() -> Identity {
        Identity {
            mac: "02:ec:00:00:00:01".into(),
            uuid: "u".into(),
            board: "bread-compact-wifi".into(),
            version: "2.4.2".into(),
            language: "zh-CN".into(),
        }
    }

    /// The request as bytes on the wire: header names in the firmware's capitalisation.
    #[tokio::test]
    async fn the_request_head_is_written_like_the_firmwares() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&req).contains(r#""board""#) {
                let n = tcp.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                .await
                .unwrap();
            String::from_utf8(req).unwrap()
        });
        let url = format!("http://127.0.0.1:{port}/xiaozhi/ota/");
        let (status, body) = post(&url, &identity()).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"{}"[..]));
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /xiaozhi/ota/ HTTP/1.1\r\n"), "{req}");
        for line in [
            format!("Host: 127.0.0.1:{port}"),
            "Activation-Version: 1".into(),
            "Device-Id: 02:ec:00:00:00:01".into(),
            "Client-Id: u".into(),
            "User-Agent: bread-compact-wifi/2.4.2".into(),
            "Accept-Language: zh-CN".into(),
            "Content-Type: application/json".into(),
        ] {
            assert!(req.contains(&format!("\r\n{line}\r\n")), "{line}: {req}");
        }
    }

    #[test]
    fn system_info_keeps_the_firmware_key_order() {
        let id = identity();
        let text = id.system_info().to_string();
        assert!(
            text.starts_with(r#"{"version":2,"language":"zh-CN","flash_size":16777216,"minimum_free_heap_size":"8318916","mac_address":"02:ec:00:00:00:01","uuid":"u","chip_model_name":"esp32s3","#),
            "{text}"
        );
        assert_eq!(id.user_agent(), "bread-compact-wifi/2.4.2");
    }
}
