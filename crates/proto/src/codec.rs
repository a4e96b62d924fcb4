//! The gRPC codec of every henvis service: prost encoding, with two answers a client can
//! act on where the stock codec answers INTERNAL or OUT_OF_RANGE: a request body that does
//! not decode is the client's error (INVALID_ARGUMENT, naming what failed to decode), and
//! a request over [`MAX_REQUEST_BYTES`] is RESOURCE_EXHAUSTED naming the limit.

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The largest request message henvis accepts, encoded (256 KiB).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// The transport's own limit, set on every server above [`MAX_REQUEST_BYTES`] so that the
/// codec, not the transport, answers an oversized request (4 MiB).
pub const MAX_TRANSPORT_BYTES: usize = 4 * 1024 * 1024;

/// Prost encoding with henvis' decode errors (used by the generated servers and clients).
#[derive(Debug, Clone)]
pub struct HenvisCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for HenvisCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for HenvisCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = HenvisDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        HenvisDecoder(ProstDecoder::default())
    }
}

/// The decoder of [`HenvisCodec`].
#[derive(Debug, Clone)]
pub struct HenvisDecoder<U>(ProstDecoder<U>);

fn short_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    full.rsplit("::").next().unwrap_or(full)
}

impl<U: Message + Default> Decoder for HenvisDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let len = buf.remaining();
        if len > MAX_REQUEST_BYTES {
            return Err(Status::resource_exhausted(format!(
                "request: at most {MAX_REQUEST_BYTES} bytes (256 KiB) encoded, got {len}; an event itself \
                 may be at most the configured event size (64 KiB by default)"
            )));
        }
        U::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!(
                "request: the body does not decode as a `{}` ({e}); send a message encoded from the henvis protos",
                short_name::<U>()
            ))
        })
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.0.buffer_settings()
    }
}
