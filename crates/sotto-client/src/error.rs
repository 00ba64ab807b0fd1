use sotto_proto::ErrorCode;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server refused the request.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
    },
    /// The server answered with something that is not the API.
    #[error("unexpected answer from the server (HTTP {status})")]
    UnexpectedResponse { status: u16 },
    #[error("cannot reach the server: {0}")]
    Http(#[from] reqwest::Error),
    #[error("session channel: {0}")]
    Channel(String),
    #[error("profile: {0}")]
    Profile(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// The API error code, if the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}
