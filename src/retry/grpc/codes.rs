//! Sets of gRPC status codes, their stable names, and the code an HTTP status stands for.

use std::fmt;

use tonic::Code;

/// A set of [`Code`]s: one bit per code (there are 17, `Ok` = 0 to `Unauthenticated` = 16).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct CodeSet(u32);

impl CodeSet {
    pub(super) const EMPTY: Self = Self(0);

    pub(super) const fn with(self, code: Code) -> Self {
        Self(self.0 | bit(code))
    }

    pub(super) const fn without(self, code: Code) -> Self {
        Self(self.0 & !bit(code))
    }

    pub(super) const fn contains(&self, code: Code) -> bool {
        self.0 & bit(code) != 0
    }
}

impl fmt::Debug for CodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codes = (0..=16).map(Code::from_i32).filter(|c| self.contains(*c));
        f.debug_set().entries(codes.map(name)).finish()
    }
}

const fn bit(code: Code) -> u32 {
    // Every code is in 0..=16 (`Code` has no other variants), so the shift cannot overflow.
    1 << (code as u32 & 31)
}

/// The code's canonical name, as gRPC's service configs (`retryableStatusCodes`) and status
/// documentation spell it: the reason of a retry it causes.
pub(super) const fn name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The code a response without `grpc-status` stands for, by its HTTP status, as gRPC maps it
/// (`doc/http-grpc-status-mapping.md`): what a proxy's error page means to a gRPC client.
pub(super) fn from_http(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hold_every_code() {
        let all = (0..=16)
            .map(Code::from_i32)
            .fold(CodeSet::EMPTY, CodeSet::with);
        for i in 0..=16 {
            let code = Code::from_i32(i);
            assert!(all.contains(code));
            assert!(!all.without(code).contains(code));
            assert!(all.without(code).contains(Code::from_i32((i + 1) % 17)));
        }
        assert_eq!(
            format!("{:?}", CodeSet::EMPTY.with(Code::Unavailable)),
            "{\"UNAVAILABLE\"}"
        );
    }

    #[test]
    fn http_statuses_map_as_grpc_does() {
        assert_eq!(
            from_http(http::StatusCode::SERVICE_UNAVAILABLE),
            Code::Unavailable
        );
        assert_eq!(from_http(http::StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(from_http(http::StatusCode::IM_A_TEAPOT), Code::Unknown);
    }
}
