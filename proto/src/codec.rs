//! The codec of every service in the contract: prost's, except that a message that does not
//! decode is `INVALID_ARGUMENT` ("malformed protobuf message: …") instead of `INTERNAL`.
//!
//! gRPC's status-code table files a request that fails to parse under INTERNAL, and tonic
//! follows it; but a client cannot tell that from a fault of the server's, and bytes that are
//! not the message the method takes are the sender's error, refused before any work like every
//! other bad input (issue 27). The same codec decodes answers on the client side, where a
//! malformed answer is as much a refusal to act on as a malformed request.

use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// prost's codec with decode errors as `INVALID_ARGUMENT` (see the module documentation).
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(ProstCodec::<T, U>::default().decoder())
    }
}

/// prost's decoder, with its errors as `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| {
            Status::invalid_argument(format!(
                "malformed protobuf message: {}",
                s.message()
                    .trim_start_matches("failed to decode Protobuf message: ")
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
