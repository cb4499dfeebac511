//! The device's MCP server (JSON-RPC 2.0 inside `type:"mcp"` messages), with the firmware's
//! parsing rules: numeric ids only, notifications and responses ignored, errors without a
//! `code`, `tools/list` pages cut near 8000 bytes, user-only tools hidden unless `withUserTools`,
//! strictly typed arguments. Its tools: the common ones every board has, the fake ones of
//! `--mcp-tool` (a canned result), then the user-only `self.get_system_info`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The firmware's tools/list page budget.
pub const PAGE_BYTES: usize = 8000;
/// The speaker volume a board starts with.
pub const DEFAULT_VOLUME: i64 = 70;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Boolean,
    Integer,
    String,
}

/// One tool argument (the firmware's `Property`).
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub name: String,
    pub kind: Kind,
    pub default: Option<Value>,
    pub minimum: Option<i64>,
    pub maximum: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
enum Action {
    DeviceStatus,
    SetVolume,
    SystemInfo,
    Canned(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub properties: Vec<Property>,
    pub user_only: bool,
    action: Action,
}

/// `--mcp-tool` JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolSpec {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    properties: Map<String, Value>,
    #[serde(default)]
    user_only: bool,
    #[serde(default = "canned_true")]
    result: Value,
}

fn canned_true() -> Value {
    Value::Bool(true)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PropertySpec {
    #[serde(rename = "type")]
    kind: Kind,
    default: Option<Value>,
    minimum: Option<i64>,
    maximum: Option<i64>,
}

impl Property {
    fn matches(&self, v: &Value) -> bool {
        match self.kind {
            Kind::Boolean => v.is_boolean(),
            Kind::Integer => v.is_number(),
            Kind::String => v.is_string(),
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        let kind = match self.kind {
            Kind::Boolean => "boolean",
            Kind::Integer => "integer",
            Kind::String => "string",
        };
        m.insert("type".into(), kind.into());
        if let Some(d) = &self.default {
            m.insert("default".into(), d.clone());
        }
        if let Some(x) = self.minimum {
            m.insert("minimum".into(), x.into());
        }
        if let Some(x) = self.maximum {
            m.insert("maximum".into(), x.into());
        }
        Value::Object(m)
    }
}

impl Tool {
    /// A fake tool from its `--mcp-tool` JSON: `{"name", "description", "properties": {NAME:
    /// {"type": "boolean"|"integer"|"string", "default", "minimum", "maximum"}}, "user_only",
    /// "result"}` (`result` defaults to `true`).
    pub fn from_spec(text: &str) -> Result<Tool, String> {
        let spec: ToolSpec =
            serde_json::from_str(text).map_err(|e| format!("--mcp-tool {text:?}: {e}"))?;
        if spec.name.is_empty() {
            return Err(format!("--mcp-tool {text:?}: empty name"));
        }
        let mut properties = Vec::new();
        for (name, p) in spec.properties {
            let p: PropertySpec = serde_json::from_value(p)
                .map_err(|e| format!("--mcp-tool {:?}: property {name:?}: {e}", spec.name))?;
            let prop = Property {
                name,
                kind: p.kind,
                default: p.default,
                minimum: p.minimum,
                maximum: p.maximum,
            };
            let bad =
                |why: &str| format!("--mcp-tool {:?}: property {:?} {why}", spec.name, prop.name);
            if prop.default.as_ref().is_some_and(|d| !prop.matches(d)) {
                return Err(bad("has a default of another type"));
            }
            if prop.kind != Kind::Integer && (prop.minimum.is_some() || prop.maximum.is_some()) {
                return Err(bad("has a range but is not an integer"));
            }
            properties.push(prop);
        }
        Ok(Tool {
            name: spec.name,
            description: spec.description,
            properties,
            user_only: spec.user_only,
            action: Action::Canned(spec.result),
        })
    }

    fn builtin(name: &str, description: &str, properties: Vec<Property>, action: Action) -> Tool {
        Tool {
            name: name.into(),
            description: description.into(),
            properties,
            user_only: action == Action::SystemInfo,
            action,
        }
    }

    /// The tools/list entry, keys in the firmware's order.
    fn to_json(&self) -> Value {
        let mut schema = Map::new();
        schema.insert("type".into(), "object".into());
        let props: Map<String, Value> = self
            .properties
            .iter()
            .map(|p| (p.name.clone(), p.to_json()))
            .collect();
        schema.insert("properties".into(), Value::Object(props));
        let required: Vec<&str> = self
            .properties
            .iter()
            .filter(|p| p.default.is_none())
            .map(|p| p.name.as_str())
            .collect();
        if !required.is_empty() {
            schema.insert("required".into(), json!(required));
        }
        let mut m = Map::new();
        m.insert("name".into(), self.name.clone().into());
        m.insert("description".into(), self.description.clone().into());
        m.insert("inputSchema".into(), Value::Object(schema));
        if self.user_only {
            m.insert("annotations".into(), json!({"audience": ["user"]}));
        }
        Value::Object(m)
    }
}

/// A `tools/call` the device answered.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Call {
    pub id: i64,
    pub name: String,
    pub arguments: Value,
    /// The result text, or the error message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one server payload led to.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    pub method: Option<String>,
    pub id: Option<i64>,
    /// The JSON-RPC reply to send, if any.
    pub reply: Option<Value>,
    /// Why nothing is sent back (the firmware logs it), when it is not a silent notification.
    pub ignored: Option<String>,
    pub call: Option<Call>,
}

pub struct McpServer {
    tools: Vec<Tool>,
    board: String,
    version: String,
    system_info: Value,
    volume: i64,
}

fn ok(id: i64, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn err(id: i64, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"message": message}})
}

/// cJSON's `valueint`: the double truncated and clamped to `int`.
fn value_int(v: &Value) -> i64 {
    v.as_f64()
        .map_or(0, |x| x.clamp(i32::MIN as f64, i32::MAX as f64) as i64)
}

/// A tool's return value as the text of its content item.
fn result_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_i64() => n.to_string(),
        other => other.to_string(),
    }
}

impl McpServer {
    /// The device's tools: the common ones, `extra` (from `--mcp-tool`), the user-only ones.
    pub fn new(board: &str, version: &str, system_info: Value, extra: Vec<Tool>) -> McpServer {
        let mut tools = vec![
            Tool::builtin(
                "self.get_device_status",
                "Provides the real-time information of the device, including the current status of the audio speaker, screen, battery, network, etc.",
                vec![],
                Action::DeviceStatus,
            ),
            Tool::builtin(
                "self.audio_speaker.set_volume",
                "Set the volume of the audio speaker. If the current volume is unknown, you must call `self.get_device_status` tool first and then call this tool.",
                vec![Property {
                    name: "volume".into(),
                    kind: Kind::Integer,
                    default: None,
                    minimum: Some(0),
                    maximum: Some(100),
                }],
                Action::SetVolume,
            ),
        ];
        for t in extra {
            // The firmware refuses a duplicate name.
            if !tools.iter().any(|x| x.name == t.name) {
                tools.push(t);
            }
        }
        tools.push(Tool::builtin(
            "self.get_system_info",
            "Get the system information",
            vec![],
            Action::SystemInfo,
        ));
        McpServer {
            tools,
            board: board.into(),
            version: version.into(),
            system_info,
            volume: DEFAULT_VOLUME,
        }
    }

    pub fn volume(&self) -> i64 {
        self.volume
    }

    /// One JSON-RPC object from the server.
    pub fn handle(&mut self, msg: &Value) -> Handled {
        let method = msg
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut h = Handled {
            method: method.clone(),
            id: None,
            reply: None,
            ignored: None,
            call: None,
        };
        let ignore = |mut h: Handled, why: &str| {
            h.ignored = Some(why.to_string());
            h
        };
        if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return ignore(h, "jsonrpc is not \"2.0\"");
        }
        let Some(method) = method else {
            return ignore(h, "no method (a response or garbage)");
        };
        if method.starts_with("notifications") {
            return h;
        }
        let params = msg.get("params");
        if params.is_some_and(|p| !p.is_object()) {
            return ignore(h, "params is not an object");
        }
        let Some(id) = msg.get("id").filter(|i| i.is_number()).map(value_int) else {
            return ignore(h, "id is not a number: no reply");
        };
        h.id = Some(id);
        h.reply = Some(match method.as_str() {
            "initialize" => ok(
                id,
                json!({"protocolVersion": "2024-11-05", "capabilities": {"tools": {}},
                    "serverInfo": {"name": self.board, "version": self.version}}),
            ),
            "tools/list" => {
                let cursor = params
                    .and_then(|p| p.get("cursor"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let with_user = params
                    .and_then(|p| p.get("withUserTools"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                match self.list(cursor, with_user) {
                    Ok(result) => ok(id, result),
                    Err(m) => err(id, m),
                }
            }
            "tools/call" => {
                let (name, arguments) = match params {
                    None => (None, Value::Null),
                    Some(p) => (
                        p.get("name").and_then(Value::as_str).map(str::to_string),
                        p.get("arguments").cloned().unwrap_or(Value::Null),
                    ),
                };
                let outcome = match (params, &name) {
                    (None, _) => Err("Missing params".to_string()),
                    (_, None) => Err("Missing name".to_string()),
                    (_, Some(_)) if !arguments.is_null() && !arguments.is_object() => {
                        Err("Invalid arguments".to_string())
                    }
                    (_, Some(n)) => self.call(n, &arguments),
                };
                h.call = Some(Call {
                    id,
                    name: name.unwrap_or_default(),
                    arguments,
                    result: outcome.as_ref().ok().cloned(),
                    error: outcome.as_ref().err().cloned(),
                });
                match outcome {
                    Ok(text) => ok(
                        id,
                        json!({"content": [{"type": "text", "text": text}], "isError": false}),
                    ),
                    Err(m) => err(id, m),
                }
            }
            other => err(id, format!("Method not implemented: {other}")),
        });
        h
    }

    /// One tools/list page, cut as the firmware cuts it.
    fn list(&self, cursor: &str, with_user: bool) -> Result<Value, String> {
        let mut json = String::from(r#"{"tools":["#);
        let mut found = cursor.is_empty();
        let mut next = String::new();
        for t in &self.tools {
            if !found {
                if t.name != cursor {
                    continue;
                }
                found = true;
            }
            if !with_user && t.user_only {
                continue;
            }
            let item = format!("{},", t.to_json());
            if json.len() + item.len() + 30 > PAGE_BYTES {
                next = t.name.clone();
                break;
            }
            json.push_str(&item);
        }
        if json.ends_with(',') {
            json.pop();
        }
        if json.ends_with('[') && !self.tools.is_empty() {
            return Err(format!(
                "Failed to add tool {next} because of payload size limit"
            ));
        }
        if next.is_empty() {
            json.push_str("]}");
        } else {
            json.push_str(&format!(r#"],"nextCursor":{}}}"#, Value::from(next)));
        }
        Ok(serde_json::from_str(&json).expect("the page is JSON"))
    }

    /// Checks the arguments as the firmware does and runs the tool; the result text.
    fn call(&mut self, name: &str, arguments: &Value) -> Result<String, String> {
        let tool = self
            .tools
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("Unknown tool: {name}"))?;
        let mut values = Map::new();
        for p in &tool.properties {
            let given = arguments.get(&p.name).filter(|v| p.matches(v));
            if let (Some(v), Kind::Integer) = (given, p.kind) {
                let n = value_int(v);
                if let Some(min) = p.minimum.filter(|&m| n < m) {
                    return Err(format!("Value is below minimum allowed: {min}"));
                }
                if let Some(max) = p.maximum.filter(|&m| n > m) {
                    return Err(format!("Value exceeds maximum allowed: {max}"));
                }
                values.insert(p.name.clone(), n.into());
            } else if let Some(v) = given.or(p.default.as_ref()) {
                values.insert(p.name.clone(), v.clone());
            } else {
                return Err(format!("Missing valid argument: {}", p.name));
            }
        }
        Ok(match &tool.action {
            Action::DeviceStatus => json!({
                "audio_speaker": {"volume": self.volume},
                "screen": {},
                "network": {"type": "wifi", "ssid": "xiaozhi-vdev", "signal": "strong"},
            })
            .to_string(),
            Action::SetVolume => {
                self.volume = values["volume"].as_i64().unwrap_or(self.volume);
                "true".into()
            }
            Action::SystemInfo => self.system_info.to_string(),
            Action::Canned(v) => result_text(v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(extra: Vec<Tool>) -> McpServer {
        McpServer::new("bread-compact-wifi", "2.4.2", json!({"version": 2}), extra)
    }

    fn rpc(id: Value, method: &str, params: Option<Value>) -> Value {
        let mut m = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(p) = params {
            m["params"] = p;
        }
        m
    }

    fn lamp() -> Tool {
        Tool::from_spec(
            r#"{"name":"self.lamp.set","description":"Turn the lamp on or off",
                "properties":{"on":{"type":"boolean"},"level":{"type":"integer","minimum":0,"maximum":10,"default":5}},
                "result":"the lamp is on"}"#,
        )
        .unwrap()
    }

    #[test]
    fn initialize_and_the_firmware_reply_shape() {
        let mut s = server(vec![]);
        let h = s.handle(&rpc(
            json!(1),
            "initialize",
            Some(json!({"capabilities": {}})),
        ));
        assert_eq!(h.id, Some(1));
        assert_eq!(
            h.reply.unwrap().to_string(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2024-11-05","capabilities":{"tools":{}},"serverInfo":{"name":"bread-compact-wifi","version":"2.4.2"}}}"#
        );
    }

    #[test]
    fn what_gets_no_reply() {
        let mut s = server(vec![]);
        for m in [
            json!({"jsonrpc": "2.0", "id": "1", "method": "initialize"}),
            json!({"jsonrpc": "2.0", "method": "initialize"}),
            json!({"jsonrpc": "1.0", "id": 1, "method": "initialize"}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {}}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [1]}),
        ] {
            let h = s.handle(&m);
            assert!(h.reply.is_none() && h.ignored.is_some(), "{m}");
        }
        let h = s.handle(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        assert!(h.reply.is_none() && h.ignored.is_none());
        // A float id is truncated.
        assert_eq!(s.handle(&rpc(json!(7.9), "initialize", None)).id, Some(7));
        let h = s.handle(&rpc(json!(3), "ping", None));
        assert_eq!(
            h.reply.unwrap()["error"],
            json!({"message": "Method not implemented: ping"})
        );
    }

    #[test]
    fn tools_list_order_user_only_and_schema() {
        let mut s = server(vec![lamp()]);
        let h = s.handle(&rpc(json!(2), "tools/list", None));
        let r = &h.reply.unwrap()["result"];
        let names: Vec<&str> = r["tools"]
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
        assert!(r.get("nextCursor").is_none());
        assert_eq!(
            r["tools"][2].to_string(),
            r#"{"name":"self.lamp.set","description":"Turn the lamp on or off","inputSchema":{"type":"object","properties":{"on":{"type":"boolean"},"level":{"type":"integer","default":5,"minimum":0,"maximum":10}},"required":["on"]}}"#
        );
        let h = s.handle(&rpc(
            json!(2),
            "tools/list",
            Some(json!({"withUserTools": true})),
        ));
        let tools = h.reply.unwrap()["result"]["tools"].clone();
        assert_eq!(tools[3]["name"], "self.get_system_info");
        assert_eq!(tools[3]["annotations"], json!({"audience": ["user"]}));
    }

    #[test]
    fn tools_list_pages_near_8000_bytes() {
        let extra: Vec<Tool> = (0..40)
            .map(|i| {
                Tool::from_spec(
                    &json!({"name": format!("self.t{i:02}"), "description": "x".repeat(400)})
                        .to_string(),
                )
                .unwrap()
            })
            .collect();
        let mut s = server(extra);
        let mut cursor = String::new();
        let mut all = Vec::new();
        for _ in 0..10 {
            let params = if cursor.is_empty() {
                None
            } else {
                Some(json!({ "cursor": cursor }))
            };
            let reply = s
                .handle(&rpc(json!(2), "tools/list", params))
                .reply
                .unwrap();
            assert!(reply["result"].to_string().len() <= PAGE_BYTES);
            for t in reply["result"]["tools"].as_array().unwrap() {
                all.push(t["name"].as_str().unwrap().to_string());
            }
            match reply["result"]["nextCursor"].as_str() {
                Some(c) => cursor = c.to_string(),
                None => break,
            }
        }
        assert_eq!(all.len(), 42, "{all:?}");
        assert_eq!(all[41], "self.t39");
        // A cursor that names no tool: nothing fits, an error without a code.
        let reply = s
            .handle(&rpc(
                json!(2),
                "tools/list",
                Some(json!({"cursor": "nope"})),
            ))
            .reply
            .unwrap();
        assert_eq!(
            reply["error"],
            json!({"message": "Failed to add tool  because of payload size limit"})
        );
    }

    #[test]
    fn tools_call_checks_arguments_strictly() {
        let mut s = server(vec![lamp()]);
        let mut call = |name: &str, args: Value| {
            let h = s.handle(&rpc(
                json!(10),
                "tools/call",
                Some(json!({"name": name, "arguments": args})),
            ));
            let reply = h.reply.unwrap();
            (reply, h.call.unwrap())
        };
        let (reply, c) = call("self.lamp.set", json!({"on": true}));
        assert_eq!(
            reply.to_string(),
            r#"{"jsonrpc":"2.0","id":10,"result":{"content":[{"type":"text","text":"the lamp is on"}],"isError":false}}"#
        );
        assert_eq!(c.result.as_deref(), Some("the lamp is on"));
        // Wrong type = missing.
        let (reply, c) = call("self.lamp.set", json!({"on": "yes"}));
        assert_eq!(
            reply["error"],
            json!({"message": "Missing valid argument: on"})
        );
        assert_eq!(c.error.as_deref(), Some("Missing valid argument: on"));
        let (reply, _) = call("self.lamp.set", json!({"on": false, "level": 11}));
        assert_eq!(
            reply["error"]["message"],
            "Value exceeds maximum allowed: 10"
        );
        let (reply, _) = call("self.nope", json!({}));
        assert_eq!(reply["error"]["message"], "Unknown tool: self.nope");
        assert!(reply["error"].get("code").is_none());
        let (reply, _) = call("self.audio_speaker.set_volume", json!({"volume": 35}));
        assert_eq!(reply["result"]["content"][0]["text"], "true");
        let (reply, _) = call("self.get_device_status", json!(null));
        let status: Value =
            serde_json::from_str(reply["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(status["audio_speaker"]["volume"], 35);
        let (reply, _) = call("self.lamp.set", json!([1]));
        assert_eq!(reply["error"]["message"], "Invalid arguments");
        let h = s.handle(&rpc(json!(11), "tools/call", None));
        assert_eq!(h.reply.unwrap()["error"]["message"], "Missing params");
    }

    #[test]
    fn canned_results_become_text_like_the_firmware_return_values() {
        assert_eq!(result_text(&json!("a")), "a");
        assert_eq!(result_text(&json!(false)), "false");
        assert_eq!(result_text(&json!(42)), "42");
        assert_eq!(
            result_text(&json!({"b": 1, "a": [2]})),
            r#"{"b":1,"a":[2]}"#
        );
        assert!(Tool::from_spec(r#"{"name":"x","properties":{"a":{"type":"float"}}}"#).is_err());
        assert!(Tool::from_spec(
            r#"{"name":"x","properties":{"a":{"type":"string","minimum":1}}}"#
        )
        .is_err());
        assert!(Tool::from_spec(
            r#"{"name":"x","properties":{"a":{"type":"string","default":1}}}"#
        )
        .is_err());
        assert!(Tool::from_spec(r#"{"name":"x","bogus":1}"#).is_err());
    }
}
