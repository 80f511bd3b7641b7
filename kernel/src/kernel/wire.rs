//! The wire: Jupyter messages to and from ZeroMQ frames, signed with
//! HMAC-SHA256 (messaging spec 5.4, "The Wire Protocol").
//!
//! A message is `identities..., <IDS|MSG>, signature, header, parent_header,
//! metadata, content, buffers...`; the signature is the hex HMAC of the four
//! JSON parts under the connection file's key. A message whose signature does
//! not match is refused here, before anything reads it; an empty key means
//! no signing, as the spec allows.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use jupyter_protocol::JupyterMessage;
use sha2::Sha256;
use zeromq::ZmqMessage;

const DELIMITER: &[u8] = b"<IDS|MSG>";

/// Why a message was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The frames do not have the spec's shape.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The signature does not match the connection key.
    #[error("bad signature (a message not signed with this kernel's key)")]
    BadSignature,
}

/// Signs and checks messages with one connection's key.
#[derive(Clone)]
pub struct Wire {
    key: Option<Hmac<Sha256>>,
}

impl Wire {
    /// A wire for `key` (empty: no signing) and `scheme` (only `hmac-sha256`).
    pub fn new(key: &str, scheme: &str) -> anyhow::Result<Self> {
        if key.is_empty() {
            return Ok(Self { key: None });
        }
        if scheme != "hmac-sha256" {
            anyhow::bail!("signature scheme `{scheme}` is not supported; use hmac-sha256");
        }
        Ok(Self {
            key: Some(Hmac::<Sha256>::new_from_slice(key.as_bytes())?),
        })
    }

    fn signature(&self, parts: &[&[u8]]) -> String {
        match &self.key {
            None => String::new(),
            Some(mac) => {
                let mut mac = mac.clone();
                for part in parts {
                    mac.update(part);
                }
                hex::encode(mac.finalize().into_bytes())
            }
        }
    }

    /// A checked message from the frames a ROUTER socket received.
    pub fn decode(&self, message: ZmqMessage) -> Result<JupyterMessage, WireError> {
        let frames: Vec<Bytes> = message.into_vec();
        let delimiter = frames
            .iter()
            .position(|f| f.as_ref() == DELIMITER)
            .ok_or_else(|| WireError::Malformed("no <IDS|MSG> delimiter".into()))?;
        let rest = &frames[delimiter + 1..];
        if rest.len() < 5 {
            return Err(WireError::Malformed(format!(
                "{} frames after the delimiter, 5 needed",
                rest.len()
            )));
        }
        if let Some(mac) = &self.key {
            let expected = hex::decode(&rest[0]).map_err(|_| WireError::BadSignature)?;
            let mut mac = mac.clone();
            for part in &rest[1..5] {
                mac.update(part);
            }
            // Constant-time comparison, as the spec asks.
            mac.verify_slice(&expected)
                .map_err(|_| WireError::BadSignature)?;
        }
        let json = |i: usize| -> Result<serde_json::Value, WireError> {
            serde_json::from_slice(&rest[i])
                .map_err(|e| WireError::Malformed(format!("frame {i}: {e}")))
        };
        let (header, content) = (json(1)?, json(4)?);
        let value = serde_json::json!({
            "header": header,
            "parent_header": json(2)?,
            "metadata": json(3)?,
            "content": content.clone(),
        });
        let mut parsed = match JupyterMessage::from_value(value.clone()) {
            Ok(parsed) => parsed,
            // jupyter-protocol's types are stricter than the spec in places (a
            // tail history_request without `unique`): keep such a message, untyped.
            Err(_) => {
                let msg_type = header["msg_type"].as_str().unwrap_or_default().to_string();
                let mut untyped = value;
                untyped["header"]["msg_type"] = serde_json::json!("taper_untyped");
                let mut message = JupyterMessage::from_value(untyped)
                    .map_err(|e| WireError::Malformed(e.to_string()))?;
                message.header.msg_type = msg_type.clone();
                message.content = jupyter_protocol::JupyterMessageContent::UnknownMessage(
                    jupyter_protocol::messaging::UnknownMessage { msg_type, content },
                );
                message
            }
        };
        parsed.zmq_identities = frames[..delimiter].to_vec();
        parsed.buffers = rest[5..].to_vec();
        Ok(parsed)
    }

    /// The frames of `message`, signed (with its identities first, for ROUTER sockets).
    pub fn encode(&self, message: &JupyterMessage) -> anyhow::Result<ZmqMessage> {
        let header = serde_json::to_vec(&message.header)?;
        let parent = match &message.parent_header {
            Some(parent) => serde_json::to_vec(parent)?,
            None => b"{}".to_vec(),
        };
        let metadata = serde_json::to_vec(&message.metadata)?;
        let content = serde_json::to_vec(&message.content)?;
        let signature = self.signature(&[&header, &parent, &metadata, &content]);
        let mut frames: Vec<Bytes> = message.zmq_identities.clone();
        frames.push(Bytes::from_static(DELIMITER));
        frames.push(Bytes::from(signature));
        frames.extend([header, parent, metadata, content].map(Bytes::from));
        frames.extend(message.buffers.iter().cloned());
        ZmqMessage::try_from(frames).map_err(|e| anyhow::anyhow!("empty message: {e:?}"))
    }
}

/// A message from this kernel as a child of `parent` (spec 5.4 header, user `taper`).
pub fn reply(
    content: impl Into<jupyter_protocol::JupyterMessageContent>,
    parent: &JupyterMessage,
) -> JupyterMessage {
    let mut message = JupyterMessage::new(content, Some(parent));
    message.header.username = "taper".into();
    message.header.version = "5.4".into();
    message
}
