//! The stdin socket: `input_request` to the frontend that ran the cell,
//! and its `input_reply` back to the cell code that asked (through the
//! display channel, since evcxr's cell process uses its own stdin to talk
//! to evcxr).

use jupyter_protocol::{JupyterMessage, JupyterMessageContent as Content};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use zeromq::{SocketRecv, SocketSend};

use super::display::InputQuestion;
use super::handlers::content;
use super::log;
use super::wire::{reply, Wire};

/// Asks each question on `socket` in turn and hands back the answer.
pub async fn serve(
    mut socket: zeromq::RouterSocket,
    mut questions: UnboundedReceiver<InputQuestion>,
    wire: Wire,
) {
    while let Some(question) = questions.recv().await {
        let answer = ask(&mut socket, &wire, &question).await;
        let _ = question.answer.send(answer);
    }
}

async fn ask(
    socket: &mut zeromq::RouterSocket,
    wire: &Wire,
    question: &InputQuestion,
) -> Result<String, String> {
    if !allows_stdin(&question.parent) {
        return Err(
            "this frontend does not accept input (its execute_request has \
                    allow_stdin false); run the cell from a notebook or console that does"
                .into(),
        );
    }
    let request = reply(
        content(
            "input_request",
            json!({ "prompt": question.prompt, "password": question.password }),
        ),
        &question.parent,
    );
    let frames = wire.encode(&request).map_err(|e| e.to_string())?;
    socket.send(frames).await.map_err(|e| e.to_string())?;
    loop {
        let frames = socket.recv().await.map_err(|e| e.to_string())?;
        match wire.decode(frames) {
            Ok(message) => match &message.content {
                Content::InputReply(r) => return Ok(r.value.clone()),
                other => log(&format!(
                    "stdin: expected input_reply, got {}",
                    other.message_type()
                )),
            },
            Err(e) => log(&format!("stdin: dropped a message: {e}")),
        }
    }
}

fn allows_stdin(parent: &JupyterMessage) -> bool {
    match &parent.content {
        Content::ExecuteRequest(r) => r.allow_stdin,
        _ => false,
    }
}
