//! Python bindings for [`crate::protocol`].
//!
//! Python form of a `ServerEvent` (externally tagged): a bare `str` for a unit
//! variant (`"EndAudio"`), otherwise a one-key dict whose value is a dict of
//! the named fields (`{"ASR": {"text": "hi"}}`). Byte fields accept any
//! buffer of bytes and decode to `bytes`.
//!
//! The GIL is released around the kernels once the payload reaches
//! `DETACH_MIN` bytes. Below that it is not worth it: releasing and re-taking
//! the GIL measured ~0.25 us here, more than encoding a whole 100-byte Opus
//! packet (~0.2 us with the call), while a 4 KiB chunk takes ~2 us.

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyList, PyMemoryView, PyString, PyTuple};

use crate::protocol::{self as kernel, ClientCommand, ServerEvent};

/// Payload size (bytes) from which a kernel runs with the GIL released.
const DETACH_MIN: usize = 4096;

fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

fn repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| format!("<{}>", type_name(obj)))
}

/// Bytes of a buffer-protocol object: borrowed from an (immutable) `bytes`,
/// copied from anything else (bytearray, memoryview, ...), because a mutable
/// buffer could change under us while the GIL is released.
enum Data<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Data<'_> {
    fn into_vec(self) -> Vec<u8> {
        match self {
            Data::Borrowed(b) => b.to_vec(),
            Data::Owned(v) => v,
        }
    }
}

impl std::ops::Deref for Data<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Borrowed(b) => b,
            Data::Owned(v) => v,
        }
    }
}

/// Names an argument in error messages; formatted only when there is one.
#[derive(Clone, Copy)]
struct What<'a> {
    variant: &'a str,
    field: &'a str,
}

impl std::fmt::Display for What<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.variant.is_empty() {
            f.write_str(self.field)
        } else {
            write!(f, "{}.{}", self.variant, self.field)
        }
    }
}

fn arg(field: &str) -> What<'_> {
    What { variant: "", field }
}

fn extract_data<'a>(obj: &'a Bound<'_, PyAny>, what: What<'_>) -> PyResult<Data<'a>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Data::Borrowed(b.as_bytes()));
    }
    let wrong = || {
        format!(
            "{what} must be bytes-like (bytes, bytearray, memoryview of bytes), got {}",
            type_name(obj)
        )
    };
    if obj.is_instance_of::<PyString>() {
        return Err(value_error(wrong()));
    }
    // Through a memoryview: the buffer protocol itself is not in Python 3.10's limited API,
    // which the abi3 wheel is built against.
    let py = obj.py();
    let view = PyMemoryView::from(obj)
        .map_err(|e| value_error(format!("{}: {}", wrong(), e.value(py))))?;
    let format: String = view.getattr(intern!(py, "format"))?.extract()?;
    if !matches!(
        format.trim_start_matches(['@', '=', '<', '>', '!']),
        "B" | "c"
    ) {
        return Err(value_error(format!(
            "{}: a buffer of format {format:?} is not compatible with u8",
            wrong()
        )));
    }
    let copy = view.call_method0(intern!(py, "tobytes"))?;
    Ok(Data::Owned(copy.cast::<PyBytes>()?.as_bytes().to_vec()))
}

fn extract_str<'a>(obj: &'a Bound<'_, PyAny>, what: What<'_>) -> PyResult<&'a str> {
    let s = obj
        .cast::<PyString>()
        .map_err(|_| value_error(format!("{what} must be str, got {}", type_name(obj))))?;
    s.to_str().map_err(|e| {
        value_error(format!(
            "{what} is not encodable as UTF-8: {}",
            e.value(obj.py())
        ))
    })
}

fn extract_vowel(obj: &Bound<'_, PyAny>, what: What<'_>) -> PyResult<u8> {
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        return Err(value_error(format!(
            "{what} must be an int in 0..=255, got {}",
            type_name(obj)
        )));
    }
    obj.extract::<u8>()
        .map_err(|_| value_error(format!("{what} must be in 0..=255 (u8), got {}", repr(obj))))
}

fn extract_items(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let item = |(i, item): (usize, Bound<'_, PyAny>)| -> PyResult<String> {
        let what = format!("Choices.items[{i}]");
        extract_str(&item, arg(&what)).map(str::to_owned)
    };
    if let Ok(l) = obj.cast::<PyList>() {
        l.iter().enumerate().map(item).collect()
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        t.iter().enumerate().map(item).collect()
    } else {
        Err(value_error(format!(
            "Choices.items must be a list of str, got {}",
            type_name(obj)
        )))
    }
}

fn unknown_variant(name: &str) -> PyErr {
    value_error(format!(
        "unknown ServerEvent variant {name:?} (expected one of {})",
        kernel::VARIANTS.join(", ")
    ))
}

/// The externally tagged Python form -> `ServerEvent`, with precise errors.
fn extract_event(obj: &Bound<'_, PyAny>) -> PyResult<ServerEvent> {
    if let Ok(s) = obj.cast::<PyString>() {
        let name = s.to_cow()?;
        if let Some(event) = ServerEvent::unit(&name) {
            return Ok(event);
        }
        return Err(match kernel::variant_fields(&name) {
            Some(fields) => value_error(format!(
                "ServerEvent {name:?} has fields ({}); pass it as {{{name:?}: {{...}}}}",
                fields.join(", ")
            )),
            None => unknown_variant(&name),
        });
    }
    let dict = obj.cast::<PyDict>().map_err(|_| {
        value_error(format!(
            "a ServerEvent must be a str (unit variant) or a one-key dict {{variant: {{fields}}}}, got {}",
            type_name(obj)
        ))
    })?;
    if dict.len() != 1 {
        return Err(value_error(format!(
            "a ServerEvent dict must have exactly one key (the variant name), got {} keys",
            dict.len()
        )));
    }
    let (key, value) = dict.iter().next().expect("len checked");
    let key = key.cast_into::<PyString>().map_err(|e| {
        value_error(format!(
            "the ServerEvent variant name must be a str, got {}",
            type_name(e.into_inner().as_any())
        ))
    })?;
    let name = key.to_str()?;
    let fields = kernel::variant_fields(name).ok_or_else(|| unknown_variant(name))?;
    if fields.is_empty() {
        return Err(value_error(format!(
            "{name:?} is a unit variant without fields: pass the bare string {name:?}"
        )));
    }
    let values = value.cast::<PyDict>().map_err(|_| {
        value_error(format!(
            "the fields of {name} must be a dict {{{}}}, got {}",
            fields
                .iter()
                .map(|f| format!("{f:?}: ..."))
                .collect::<Vec<_>>()
                .join(", "),
            type_name(&value)
        ))
    })?;
    // One pass over the given fields: each must be one of the variant's.
    let mut slots: [Option<Bound<'_, PyAny>>; 2] = [None, None];
    for (k, v) in values.iter() {
        let index = k
            .cast::<PyString>()
            .ok()
            .and_then(|s| s.to_str().ok())
            .and_then(|s| fields.iter().position(|f| *f == s));
        match index {
            Some(i) => slots[i] = Some(v),
            None => {
                return Err(value_error(format!(
                    "unexpected field {} for {name} (its fields: {})",
                    repr(&k),
                    fields.join(", ")
                )))
            }
        }
    }
    if let Some(i) = slots[..fields.len()].iter().position(Option::is_none) {
        return Err(value_error(format!(
            "{name} is missing field {:?}",
            fields[i]
        )));
    }
    let [first, second] = slots;
    let first = first.expect("checked above");
    let what = |field| What {
        variant: name,
        field,
    };
    let text = |obj: &Bound<'_, PyAny>, field| -> PyResult<String> {
        extract_str(obj, what(field)).map(str::to_owned)
    };
    let data = |obj: &Bound<'_, PyAny>| -> PyResult<Vec<u8>> {
        Ok(extract_data(obj, what("data"))?.into_vec())
    };
    Ok(match name {
        "HelloChunk" => ServerEvent::HelloChunk {
            data: data(&first)?,
        },
        "AudioChunk" => ServerEvent::AudioChunk {
            data: data(&first)?,
        },
        "AudioChunkWithVowel" => ServerEvent::AudioChunkWithVowel {
            data: data(&first)?,
            vowel: extract_vowel(&second.expect("checked above"), what("vowel"))?,
        },
        "ASR" => ServerEvent::ASR {
            text: text(&first, "text")?,
        },
        "StartAudio" => ServerEvent::StartAudio {
            text: text(&first, "text")?,
        },
        "DisplayText" => ServerEvent::DisplayText {
            text: text(&first, "text")?,
        },
        "Action" => ServerEvent::Action {
            action: text(&first, "action")?,
        },
        "Choices" => ServerEvent::Choices {
            message: text(&first, "message")?,
            items: extract_items(&second.expect("checked above"))?,
        },
        _ => unreachable!("variant_fields knows exactly the struct variants"),
    })
}

/// Rough payload size, to decide whether releasing the GIL pays off.
fn payload_len(event: &ServerEvent) -> usize {
    match event {
        ServerEvent::HelloChunk { data }
        | ServerEvent::AudioChunk { data }
        | ServerEvent::AudioChunkWithVowel { data, .. } => data.len(),
        ServerEvent::ASR { text }
        | ServerEvent::StartAudio { text }
        | ServerEvent::DisplayText { text }
        | ServerEvent::Action { action: text } => text.len(),
        ServerEvent::Choices { message, items } => {
            message.len() + items.iter().map(|i| i.len() + 8).sum::<usize>()
        }
        _ => 0,
    }
}

/// Encode a server->device event exactly as echokit_server does (`rmp_serde::to_vec`).
///
/// `event` is the externally tagged form: a bare str for a unit variant
/// ("EndAudio"), otherwise a one-key dict of the named fields, e.g.
/// {"ASR": {"text": "hi"}}, {"AudioChunk": {"data": b"..."}},
/// {"AudioChunkWithVowel": {"data": b"...", "vowel": 2}},
/// {"Choices": {"message": "...", "items": ["a", "b"]}}.
/// Byte fields take bytes, bytearray or memoryview and are written as MessagePack
/// int arrays (not bin), fields positionally, as the reference does.
///
/// Raises ValueError for an unknown variant, a missing, extra or wrongly typed
/// field, or a vowel outside 0..=255.
#[pyfunction]
fn encode_event<'py>(py: Python<'py>, event: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let event = extract_event(event)?;
    let bytes = if payload_len(&event) >= DETACH_MIN {
        py.detach(|| kernel::encode_event(&event))?
    } else {
        kernel::encode_event(&event)?
    };
    Ok(PyBytes::new(py, &bytes))
}

/// Fast path for the audio hot loop: the same bytes as
/// encode_event({"AudioChunk": {"data": data}}), or with a vowel
/// encode_event({"AudioChunkWithVowel": {"data": data, "vowel": vowel}}),
/// without building the dict (several times faster; SIMD byte expansion, written
/// straight into the result, GIL released for large payloads).
///
/// Raises ValueError if data is not bytes-like or vowel is not an int in 0..=255.
#[pyfunction]
#[pyo3(signature = (data, vowel = None))]
fn encode_audio_chunk<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    vowel: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let vowel = match vowel {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(extract_vowel(v, arg("vowel"))?),
    };
    let data = extract_data(data, arg("data"))?;
    let data: &[u8] = &data;
    let len = kernel::audio_chunk_len(data, vowel)?;
    PyBytes::new_with(py, len, |out| {
        if data.len() >= DETACH_MIN {
            py.detach(|| kernel::encode_audio_chunk_into(data, vowel, out))?;
        } else {
            kernel::encode_audio_chunk_into(data, vowel, out)?;
        }
        Ok(())
    })
}

fn event_to_py<'py>(py: Python<'py>, event: ServerEvent) -> PyResult<Bound<'py, PyAny>> {
    let fields = PyDict::new(py);
    let name = match event {
        ServerEvent::HelloStart => return Ok(intern!(py, "HelloStart").clone().into_any()),
        ServerEvent::HelloEnd => return Ok(intern!(py, "HelloEnd").clone().into_any()),
        ServerEvent::EndAudio => return Ok(intern!(py, "EndAudio").clone().into_any()),
        ServerEvent::StartVideo => return Ok(intern!(py, "StartVideo").clone().into_any()),
        ServerEvent::EndVideo => return Ok(intern!(py, "EndVideo").clone().into_any()),
        ServerEvent::EndResponse => return Ok(intern!(py, "EndResponse").clone().into_any()),
        ServerEvent::EndVad => return Ok(intern!(py, "EndVad").clone().into_any()),
        ServerEvent::HelloChunk { data } => {
            fields.set_item(intern!(py, "data"), PyBytes::new(py, &data))?;
            intern!(py, "HelloChunk")
        }
        ServerEvent::AudioChunk { data } => {
            fields.set_item(intern!(py, "data"), PyBytes::new(py, &data))?;
            intern!(py, "AudioChunk")
        }
        ServerEvent::AudioChunkWithVowel { data, vowel } => {
            fields.set_item(intern!(py, "data"), PyBytes::new(py, &data))?;
            fields.set_item(intern!(py, "vowel"), vowel)?;
            intern!(py, "AudioChunkWithVowel")
        }
        ServerEvent::ASR { text } => {
            fields.set_item(intern!(py, "text"), text)?;
            intern!(py, "ASR")
        }
        ServerEvent::StartAudio { text } => {
            fields.set_item(intern!(py, "text"), text)?;
            intern!(py, "StartAudio")
        }
        ServerEvent::DisplayText { text } => {
            fields.set_item(intern!(py, "text"), text)?;
            intern!(py, "DisplayText")
        }
        ServerEvent::Action { action } => {
            fields.set_item(intern!(py, "action"), action)?;
            intern!(py, "Action")
        }
        ServerEvent::Choices { message, items } => {
            fields.set_item(intern!(py, "message"), message)?;
            fields.set_item(intern!(py, "items"), PyList::new(py, items)?)?;
            intern!(py, "Choices")
        }
    };
    let event = PyDict::new(py);
    event.set_item(name, fields)?;
    Ok(event.into_any())
}

/// Decode one MessagePack ServerEvent into the form encode_event takes.
///
/// Accepts what the firmware's rmp_serde::from_slice accepts: the variant as a
/// string or a one-entry map, fields as a positional array or a map of names
/// (unknown names skipped), byte fields as an int array or bin. Byte fields come
/// back as bytes. Raises ValueError for malformed, truncated or unknown input
/// and for bytes trailing after the event.
#[pyfunction]
fn decode_event<'py>(py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let data = extract_data(data, arg("data"))?;
    let data: &[u8] = &data;
    let event = if data.len() >= DETACH_MIN {
        py.detach(|| kernel::decode_event(data))?
    } else {
        kernel::decode_event(data)?
    };
    event_to_py(py, event)
}

/// Parse one JSON text frame sent by a device (docs/protocol.md#client-commands).
///
/// Returns e.g. {"event": "StartChat"}, {"event": "Text", "input": "hi"} or
/// {"event": "Select", "index": 0}. Keys other than the command's own are
/// ignored, as the reference's serde parser does. Raises ValueError (with
/// serde_json's description of the problem) for anything else: bad JSON, an
/// unknown "event", a missing or wrongly typed field, a negative index.
#[pyfunction]
fn parse_client_command<'py>(
    py: Python<'py>,
    text: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let text = text.cast::<PyString>().map_err(|_| {
        value_error(format!(
            "a client command must be a str (a WebSocket text frame), got {}",
            type_name(text)
        ))
    })?;
    let text = text
        .to_str()
        .map_err(|e| value_error(format!("invalid client command: {}", e.value(py))))?;
    let command = if text.len() >= DETACH_MIN {
        py.detach(|| kernel::parse_client_command(text))?
    } else {
        kernel::parse_client_command(text)?
    };
    let out = PyDict::new(py);
    let event = intern!(py, "event");
    match command {
        ClientCommand::StartChat => out.set_item(event, intern!(py, "StartChat"))?,
        ClientCommand::StartRecord => out.set_item(event, intern!(py, "StartRecord"))?,
        ClientCommand::Submit => out.set_item(event, intern!(py, "Submit"))?,
        ClientCommand::Text { input } => {
            out.set_item(event, intern!(py, "Text"))?;
            out.set_item(intern!(py, "input"), input)?;
        }
        ClientCommand::Select { index } => {
            out.set_item(event, intern!(py, "Select"))?;
            out.set_item(intern!(py, "index"), index)?;
        }
    }
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode_event, m)?)?;
    m.add_function(wrap_pyfunction!(encode_audio_chunk, m)?)?;
    m.add_function(wrap_pyfunction!(decode_event, m)?)?;
    m.add_function(wrap_pyfunction!(parse_client_command, m)?)?;
    m.add(
        "SERVER_EVENT_VARIANTS",
        PyTuple::new(m.py(), kernel::VARIANTS)?,
    )?;
    Ok(())
}
