//! Audio devices through cpal: listing, capture and playback.
//!
//! Real-time contract (the cpal callbacks): everything is allocated before the stream starts;
//! the callbacks only copy samples into or out of lock-free SPSC rings (`rtrb`, the playout
//! buffer), count overruns and underruns in atomics, and never lock, allocate, log, block or
//! touch Python. A worker thread per capture stream (not the callback) downmixes, resamples
//! and cuts frames, then wakes the reader: a condition variable any thread can wait on, and on
//! Unix a socket it writes one byte to, for an event loop that watches file descriptors.
//!
//! Each stream is owned by the thread that built it (cpal streams need not be `Send`); the
//! handle here talks to it through atomics and a stop flag.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample};

use crate::aec::EchoCanceller;
use crate::jitter::{playout_buffer, PlayoutConfig, PlayoutReader, PlayoutStats, PlayoutWriter};
use crate::pcm;
use crate::resample::Resampler;

/// Why a device could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceError {
    /// No device matches the name; `geminilive devices` lists them.
    NoSuchDevice { name: String },
    /// The host has no default device for this direction (no audio server running?).
    NoDefaultDevice { direction: &'static str },
    /// The device cannot run in a format we can convert (sample format, channels).
    UnsupportedFormat { reason: String },
    /// The audio backend failed (opening, starting, or while running).
    Backend { message: String },
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchDevice { name } => write!(f, "no audio device named {name:?}"),
            Self::NoDefaultDevice { direction } => write!(f, "no default {direction} device"),
            Self::UnsupportedFormat { reason } => write!(f, "unsupported audio format: {reason}"),
            Self::Backend { message } => write!(f, "audio backend error: {message}"),
        }
    }
}

impl std::error::Error for DeviceError {}

fn backend(err: impl fmt::Display) -> DeviceError {
    DeviceError::Backend {
        message: err.to_string(),
    }
}

/// One device as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub host: String,
    pub id: String,
    pub name: String,
    pub is_default_input: bool,
    pub is_default_output: bool,
    pub input_channels: u16,
    pub output_channels: u16,
    /// (min, max) sample rates over the supported configurations.
    pub input_rates: Option<(u32, u32)>,
    pub output_rates: Option<(u32, u32)>,
    pub default_input_rate: Option<u32>,
    pub default_output_rate: Option<u32>,
}

fn device_name(device: &cpal::Device) -> String {
    device
        .description()
        .map(|d| d.name().to_string())
        .unwrap_or_else(|_| device.to_string())
}

fn device_id(device: &cpal::Device) -> String {
    device.id().map(|id| id.to_string()).unwrap_or_default()
}

fn rate_range(
    configs: impl Iterator<Item = cpal::SupportedStreamConfigRange>,
) -> (Option<(u32, u32)>, u16) {
    let mut range: Option<(u32, u32)> = None;
    let mut channels = 0;
    for c in configs {
        channels = channels.max(c.channels());
        range = Some(match range {
            None => (c.min_sample_rate(), c.max_sample_rate()),
            Some((lo, hi)) => (lo.min(c.min_sample_rate()), hi.max(c.max_sample_rate())),
        });
    }
    (range, channels)
}

/// Every device of the default host.
///
/// # Errors
/// `Backend` when the host cannot enumerate devices.
pub fn list_devices() -> Result<Vec<DeviceInfo>, DeviceError> {
    let host = cpal::default_host();
    let default_in = host.default_input_device().map(|d| device_id(&d));
    let default_out = host.default_output_device().map(|d| device_id(&d));
    let mut out = Vec::new();
    for device in host.devices().map_err(backend)? {
        let id = device_id(&device);
        let (input_rates, input_channels) = device
            .supported_input_configs()
            .map(rate_range)
            .unwrap_or((None, 0));
        let (output_rates, output_channels) = device
            .supported_output_configs()
            .map(rate_range)
            .unwrap_or((None, 0));
        out.push(DeviceInfo {
            host: host.id().name().to_string(),
            name: device_name(&device),
            is_default_input: default_in.as_deref() == Some(id.as_str()),
            is_default_output: default_out.as_deref() == Some(id.as_str()),
            input_channels,
            output_channels,
            input_rates,
            output_rates,
            default_input_rate: device.default_input_config().ok().map(|c| c.sample_rate()),
            default_output_rate: device.default_output_config().ok().map(|c| c.sample_rate()),
            id,
        });
    }
    Ok(out)
}

fn find_device(name: Option<&str>, input: bool) -> Result<cpal::Device, DeviceError> {
    let host = cpal::default_host();
    let Some(name) = name else {
        let device = if input {
            host.default_input_device()
        } else {
            host.default_output_device()
        };
        return device.ok_or(DeviceError::NoDefaultDevice {
            direction: if input { "input" } else { "output" },
        });
    };
    let devices: Vec<cpal::Device> = host.devices().map_err(backend)?.collect();
    let usable = |d: &cpal::Device| {
        if input {
            d.supports_input()
        } else {
            d.supports_output()
        }
    };
    let exact = devices
        .iter()
        .find(|d| (device_id(d) == name || device_name(d) == name) && usable(d));
    let id_suffix = devices
        .iter()
        .find(|d| device_id(d).split_once(':').map(|(_, id)| id) == Some(name) && usable(d));
    exact
        .or(id_suffix)
        .cloned()
        .ok_or_else(|| DeviceError::NoSuchDevice {
            name: name.to_string(),
        })
}

/// The device's default configuration with a fixed period of about `period_ms` (cpal's
/// default size can be seconds through PulseAudio).
fn stream_config(supported: &cpal::SupportedStreamConfig, period_ms: u32) -> cpal::StreamConfig {
    let mut config: cpal::StreamConfig = supported.config();
    let period = (config.sample_rate * period_ms / 1000).max(32);
    config.buffer_size = cpal::BufferSize::Fixed(period);
    config
}

/// Call `build::<T>(args)` with the sample type of the device's format (the callbacks convert
/// to and from f32).
macro_rules! for_sample_format {
    ($format:expr, $build:ident($($arg:expr),*)) => {
        match $format {
            SampleFormat::F32 => $build::<f32>($($arg),*),
            SampleFormat::I16 => $build::<i16>($($arg),*),
            SampleFormat::I32 => $build::<i32>($($arg),*),
            SampleFormat::U16 => $build::<u16>($($arg),*),
            other => Err(DeviceError::UnsupportedFormat { reason: format!("sample format {other}") }),
        }
    };
}

/// Stream errors: a fatal one (the device is gone, the stream invalid) for Python to raise;
/// recovered ones counted: xruns (the device ran dry or over: an audible gap) apart from the
/// rest (a failed delay query and the like, which the PulseAudio plugin reports every period in
/// some runs: harmless, but a user must be able to tell them from glitches).
#[derive(Default)]
struct ErrorSlot {
    failed: AtomicBool,
    xruns: AtomicU64,
    transient: AtomicU64,
    message: Mutex<Option<String>>,
    first_transient: Mutex<Option<cpal::Error>>,
}

impl ErrorSlot {
    /// Called from cpal's error callback: never waits for a lock, and keeps the first
    /// recovered error other than an xrun (whose message says nothing more) as it came
    /// (moved, not formatted: no allocation here).
    fn report(&self, err: cpal::Error) {
        let fatal = matches!(
            err.kind(),
            cpal::ErrorKind::DeviceNotAvailable
                | cpal::ErrorKind::StreamInvalidated
                | cpal::ErrorKind::DeviceBusy
        );
        if fatal {
            self.set(err.to_string());
            return;
        }
        if err.kind() == cpal::ErrorKind::Xrun {
            self.xruns.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.transient.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_transient.try_lock() {
            if first.is_none() {
                *first = Some(err);
            }
        }
    }

    fn xruns(&self) -> u64 {
        self.xruns.load(Ordering::Relaxed)
    }

    fn recovered_errors(&self) -> u64 {
        self.transient.load(Ordering::Relaxed)
    }

    /// The first recovered error other than an xrun, for diagnosis.
    fn first_recovered(&self) -> Option<String> {
        self.first_transient
            .lock()
            .ok()
            .and_then(|first| first.as_ref().map(|e| e.to_string()))
    }

    fn set(&self, message: String) {
        if let Ok(mut slot) = self.message.try_lock() {
            slot.get_or_insert(message);
        }
        self.failed.store(true, Ordering::Release);
    }

    fn get(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.message
                .lock()
                .ok()
                .and_then(|m| m.clone())
                .unwrap_or_else(|| "the audio stream failed".into()),
        )
    }
}

/// The thread that owns a cpal stream (streams need not be `Send`).
struct StreamThread {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// How long `close` waits for the backend to let go of a stream. A dead audio server can
/// leave the backend blocked forever; the thread is then left behind instead of hanging.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

impl StreamThread {
    /// Run `build` on a new thread that keeps the stream alive until `stop`; `work` is
    /// called every `tick` while it runs. Errors from building come back to the caller.
    fn spawn<S, B, W>(
        name: &str,
        tick: Duration,
        build: B,
        mut work: W,
    ) -> Result<Self, DeviceError>
    where
        S: 'static,
        B: FnOnce() -> Result<S, DeviceError> + Send + 'static,
        W: FnMut() + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (thread_stop, thread_done) = (Arc::clone(&stop), Arc::clone(&done));
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                match build() {
                    Ok(stream) => {
                        let _ = ready_tx.send(Ok(()));
                        while !thread_stop.load(Ordering::Acquire) {
                            work();
                            std::thread::sleep(tick);
                        }
                        drop(stream);
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                    }
                }
                thread_done.store(true, Ordering::Release);
            })
            .map_err(backend)?;
        let mut thread = Self {
            stop,
            done,
            handle: Some(handle),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(thread),
            Ok(Err(err)) => {
                thread.close();
                Err(err)
            }
            Err(_) => Err(DeviceError::Backend {
                message: "the audio thread died while opening".into(),
            }),
        }
    }

    /// Stop the stream and wait (at most `CLOSE_TIMEOUT`) for the device to be released.
    fn close(&mut self) {
        self.stop.store(true, Ordering::Release);
        let Some(handle) = self.handle.take() else {
            return;
        };
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while !self.done.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if self.done.load(Ordering::Acquire) {
            let _ = handle.join();
        }
    }
}

// --- capture -------------------------------------------------------------------------------------

/// A frame of captured audio, mono at the requested rate.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedFrame {
    pub samples: Vec<f32>,
    /// When the audio callback delivered its last sample, in seconds on the clock given to
    /// `open` (so `now - timestamp_s` is the callback-to-Python delay).
    pub timestamp_s: f64,
    /// Its first sample's index in the stream (at the requested rate).
    pub index: u64,
}

/// Counters of a capture stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub callbacks: u64,
    /// Device samples lost because the worker fell behind the callback.
    pub overruns: u64,
    /// Frames dropped because Python did not take them (queue over its bound).
    pub dropped_frames: u64,
    pub frames: u64,
    /// Under/overruns the backend reported and recovered from (audible gaps).
    pub xruns: u64,
    /// Other backend errors recovered from (no gap in the audio).
    pub stream_errors: u64,
}

/// The socket pair that wakes an event loop watching file descriptors (Unix); elsewhere
/// nothing, and readers wait on the condition variable (`FrameWaiter`).
#[cfg(unix)]
pub mod loop_wake {
    use std::io::Write;

    pub type End = std::os::unix::net::UnixStream;

    pub fn pair() -> std::io::Result<(End, End)> {
        let (ours, theirs) = End::pair()?;
        ours.set_nonblocking(true)?;
        theirs.set_nonblocking(true)?;
        Ok((ours, theirs))
    }

    pub fn duplicate(end: &End) -> std::io::Result<End> {
        end.try_clone()
    }

    /// Non-blocking: a full socket means the reader has wake-ups pending already.
    pub fn ring(mut end: &End, byte: u8) {
        let _ = end.write(&[byte]);
    }
}

#[cfg(not(unix))]
pub mod loop_wake {
    pub type End = ();

    pub fn pair() -> std::io::Result<(End, End)> {
        Ok(((), ()))
    }

    pub fn duplicate(_: &End) -> std::io::Result<End> {
        Ok(())
    }

    pub fn ring(_: &End, _: u8) {}
}

struct CaptureShared {
    frames: Mutex<VecDeque<CapturedFrame>>,
    /// Notified when frames are queued, and by `FrameWaiter::release`.
    frames_ready: Condvar,
    waiters_released: AtomicBool,
    callbacks: AtomicU64,
    overruns: AtomicU64,
    dropped_frames: AtomicU64,
    frames_made: AtomicU64,
    error: ErrorSlot,
}

impl CaptureShared {
    fn new() -> Self {
        Self {
            frames: Mutex::new(VecDeque::new()),
            frames_ready: Condvar::new(),
            waiters_released: AtomicBool::new(false),
            callbacks: AtomicU64::new(0),
            overruns: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
            frames_made: AtomicU64::new(0),
            error: ErrorSlot::default(),
        }
    }
}

/// Capture settings.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub device: Option<String>,
    pub sample_rate_hz: u32,
    pub frame_samples: usize,
    pub period_ms: u32,
    /// Most frames kept for a slow reader before the oldest are dropped (and counted).
    pub max_queued_frames: usize,
}

/// A running capture stream.
pub struct CaptureStream {
    shared: Arc<CaptureShared>,
    thread: StreamThread,
    wake: loop_wake::End,
    pub device_name: String,
    pub device_rate: u32,
    pub device_channels: u16,
}

/// Samples written by the callback with the instant the callback ran.
#[derive(Clone, Copy)]
struct CallbackMark {
    first_sample: u64,
    at: Instant,
}

fn build_capture<T>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    mut samples_tx: rtrb::Producer<f32>,
    mut marks_tx: rtrb::Producer<CallbackMark>,
    shared: Arc<CaptureShared>,
) -> Result<cpal::Stream, DeviceError>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let errors = Arc::clone(&shared);
    let mut written: u64 = 0;
    device
        .build_input_stream::<T, _, _>(
            *config,
            move |data: &[T], _info: &cpal::InputCallbackInfo| {
                let _ = marks_tx.push(CallbackMark {
                    first_sample: written,
                    at: Instant::now(),
                });
                let room =
                    write_fitting(&mut samples_tx, data.iter().map(|s| f32::from_sample(*s)));
                written += data.len() as u64;
                if room < data.len() {
                    shared
                        .overruns
                        .fetch_add((data.len() - room) as u64, Ordering::Relaxed);
                }
                shared.callbacks.fetch_add(1, Ordering::Relaxed);
            },
            move |err| errors.error.report(err),
            None,
        )
        .map_err(backend)
}

/// Write as many of `values` as the ring has room for, from an audio callback: never waits,
/// never allocates. Returns how many went in.
fn write_fitting(
    tx: &mut rtrb::Producer<f32>,
    values: impl ExactSizeIterator<Item = f32>,
) -> usize {
    let room = tx.slots().min(values.len());
    if let Ok(mut chunk) = tx.write_chunk_uninit(room) {
        let (a, b) = chunk.as_mut_slices();
        for (slot, value) in a.iter_mut().chain(b.iter_mut()).zip(values) {
            slot.write(value);
        }
        // SAFETY: every one of the `room` slots was written just above.
        unsafe { chunk.commit_all() };
    }
    room
}

/// What a playback stream played, for a capture stream's echo canceller: the samples its
/// callback handed to the device (mono, at the device rate), through a lock-free ring.
pub struct EchoReference {
    samples: rtrb::Consumer<f32>,
    device_rate: u32,
}

/// A capture stream's echo canceller with its reference: the played audio, resampled to the
/// capture rate, is rendered before each batch of captured audio is processed.
struct EchoPath {
    reference: EchoReference,
    resampler: Resampler,
    canceller: EchoCanceller,
    played: Vec<f32>,
    played_resampled: Vec<f32>,
    cleaned: Vec<f32>,
}

impl EchoPath {
    fn new(reference: EchoReference, capture_rate: u32) -> Result<Self, DeviceError> {
        let unsupported = |reason: String| DeviceError::UnsupportedFormat { reason };
        let canceller = EchoCanceller::new(capture_rate).map_err(|e| unsupported(e.to_string()))?;
        let resampler = Resampler::new(reference.device_rate, capture_rate, 1)
            .map_err(|e| unsupported(e.to_string()))?;
        Ok(Self {
            reference,
            resampler,
            canceller,
            played: Vec::new(),
            played_resampled: Vec::new(),
            cleaned: Vec::new(),
        })
    }

    /// Render what was played since the last call, then cancel its echo from `captured`.
    fn process(&mut self, captured: &[f32]) -> &[f32] {
        let available = self.reference.samples.slots();
        if let Ok(chunk) = self.reference.samples.read_chunk(available) {
            let (a, b) = chunk.as_slices();
            self.played.clear();
            self.played.extend_from_slice(a);
            self.played.extend_from_slice(b);
            chunk.commit_all();
            self.played_resampled
                .resize(self.resampler.output_len_max(self.played.len()), 0.0);
            if let Ok(n) = self
                .resampler
                .process_into(&self.played, &mut self.played_resampled)
            {
                self.canceller.render(&self.played_resampled[..n]);
            }
        }
        self.cleaned.clear();
        self.canceller.process(captured, &mut self.cleaned);
        &self.cleaned
    }
}

/// Worker state: turns device samples into timestamped mono frames at the target rate.
struct CaptureWorker {
    samples_rx: rtrb::Consumer<f32>,
    marks_rx: rtrb::Consumer<CallbackMark>,
    marks: VecDeque<CallbackMark>,
    channels: usize,
    device_rate: u32,
    resampler: Resampler,
    interleaved: Vec<f32>,
    mono: Vec<f32>,
    resampled: Vec<f32>,
    pending: Vec<f32>,
    next_index: u64,
    frame_samples: usize,
    max_queued: usize,
    clock_base: Instant,
    clock_offset_s: f64,
    shared: Arc<CaptureShared>,
    wake: loop_wake::End,
    echo: Option<EchoPath>,
}

impl CaptureWorker {
    /// When the callback that delivered input for output sample `output_index` ran. (The
    /// device-reported capture instant is not usable through the PulseAudio plugin: it runs
    /// hundreds of milliseconds off while the stream starts.)
    fn delivery_time(&self, output_index: u64) -> f64 {
        // The resampler's output is aligned with its input: output k is input k * in / out.
        let input_frame = output_index as f64 * f64::from(self.device_rate)
            / f64::from(self.resampler.output_rate());
        let input_sample = (input_frame as u64) * self.channels as u64;
        let mark = self
            .marks
            .iter()
            .rev()
            .find(|m| m.first_sample <= input_sample)
            .or(self.marks.front());
        let Some(mark) = mark else {
            return self.clock_offset_s;
        };
        self.clock_offset_s + mark.at.duration_since(self.clock_base).as_secs_f64()
    }

    fn run_once(&mut self) {
        while let Ok(mark) = self.marks_rx.pop() {
            self.marks.push_back(mark);
            if self.marks.len() > 512 {
                self.marks.pop_front();
            }
        }
        let available = self.samples_rx.slots();
        let whole = available - available % self.channels;
        if whole == 0 {
            return;
        }
        self.interleaved.clear();
        if let Ok(chunk) = self.samples_rx.read_chunk(whole) {
            let (a, b) = chunk.as_slices();
            self.interleaved.extend_from_slice(a);
            self.interleaved.extend_from_slice(b);
            chunk.commit_all();
        }
        self.mono.resize(whole / self.channels, 0.0);
        if pcm::to_mono_into(&self.interleaved, self.channels, &mut self.mono).is_err() {
            return;
        }
        self.resampled
            .resize(self.resampler.output_len_max(self.mono.len()), 0.0);
        let Ok(n) = self.resampler.process_into(&self.mono, &mut self.resampled) else {
            return;
        };
        match &mut self.echo {
            Some(echo) => self
                .pending
                .extend_from_slice(echo.process(&self.resampled[..n])),
            None => self.pending.extend_from_slice(&self.resampled[..n]),
        }
        let mut made = 0;
        while self.pending.len() >= self.frame_samples {
            let samples: Vec<f32> = self.pending.drain(..self.frame_samples).collect();
            let last = self.next_index + self.frame_samples as u64 - 1;
            let frame = CapturedFrame {
                timestamp_s: self.delivery_time(last),
                index: self.next_index,
                samples,
            };
            self.next_index += self.frame_samples as u64;
            if let Ok(mut queue) = self.shared.frames.lock() {
                if queue.len() >= self.max_queued {
                    queue.pop_front();
                    self.shared.dropped_frames.fetch_add(1, Ordering::Relaxed);
                }
                queue.push_back(frame);
            }
            made += 1;
        }
        if made > 0 {
            self.shared.frames_made.fetch_add(made, Ordering::Relaxed);
            self.shared.frames_ready.notify_all();
            loop_wake::ring(&self.wake, 1);
        }
    }
}

impl CaptureStream {
    /// Open and start capturing. `clock_offset_s` is the caller's clock (e.g. Python's
    /// `time.monotonic()`) read just before the call; frame timestamps are on that clock.
    ///
    /// # Errors
    /// No such device, an unsupported format, or a backend failure.
    pub fn open(
        config: &CaptureConfig,
        clock_offset_s: f64,
        echo_reference: Option<EchoReference>,
    ) -> Result<(Self, loop_wake::End), DeviceError> {
        let clock_base = Instant::now();
        // Echo cancellation runs in the worker (never in the callback), at the capture rate.
        let echo = echo_reference
            .map(|reference| EchoPath::new(reference, config.sample_rate_hz))
            .transpose()?;
        let device = find_device(config.device.as_deref(), true)?;
        let supported = device.default_input_config().map_err(backend)?;
        let stream_config = stream_config(&supported, config.period_ms);
        let device_rate = stream_config.sample_rate;
        let channels = stream_config.channels;
        let resampler = Resampler::new(device_rate, config.sample_rate_hz, 1).map_err(|e| {
            DeviceError::UnsupportedFormat {
                reason: e.to_string(),
            }
        })?;
        let (wake, python_end) = loop_wake::pair().map_err(backend)?;
        let shared = Arc::new(CaptureShared::new());
        // One second of device audio between the callback and the worker.
        let (samples_tx, samples_rx) =
            rtrb::RingBuffer::new(device_rate as usize * channels as usize);
        let (marks_tx, marks_rx) = rtrb::RingBuffer::new(1024);
        let mut worker = CaptureWorker {
            samples_rx,
            marks_rx,
            marks: VecDeque::with_capacity(513),
            channels: channels as usize,
            device_rate,
            resampler,
            interleaved: Vec::new(),
            mono: Vec::new(),
            resampled: Vec::new(),
            pending: Vec::new(),
            next_index: 0,
            frame_samples: config.frame_samples,
            max_queued: config.max_queued_frames,
            clock_base,
            clock_offset_s,
            shared: Arc::clone(&shared),
            wake: loop_wake::duplicate(&wake).map_err(backend)?,
            echo,
        };
        let format = supported.sample_format();
        let build_shared = Arc::clone(&shared);
        // The worker polls the callback ring this often: a 2 ms tick bounds the wait it adds.
        let tick = Duration::from_millis(2);
        let thread = StreamThread::spawn(
            "geminilive-capture",
            tick,
            move || {
                let stream = for_sample_format!(
                    format,
                    build_capture(&device, &stream_config, samples_tx, marks_tx, build_shared)
                )?;
                stream.play().map_err(backend)?;
                Ok(stream)
            },
            move || worker.run_once(),
        )?;
        let name = config.device.clone().unwrap_or_else(|| "default".into());
        Ok((
            Self {
                shared,
                thread,
                wake,
                device_name: name,
                device_rate,
                device_channels: channels,
            },
            python_end,
        ))
    }

    /// Take the frames captured so far (oldest first).
    pub fn take_frames(&self) -> Vec<CapturedFrame> {
        self.shared
            .frames
            .lock()
            .map(|mut q| q.drain(..).collect())
            .unwrap_or_default()
    }

    pub fn stats(&self) -> CaptureStats {
        CaptureStats {
            callbacks: self.shared.callbacks.load(Ordering::Relaxed),
            overruns: self.shared.overruns.load(Ordering::Relaxed),
            dropped_frames: self.shared.dropped_frames.load(Ordering::Relaxed),
            frames: self.shared.frames_made.load(Ordering::Relaxed),
            xruns: self.shared.error.xruns(),
            stream_errors: self.shared.error.recovered_errors(),
        }
    }

    /// The first error other than an xrun the stream recovered from, for diagnosis.
    pub fn first_stream_error(&self) -> Option<String> {
        self.shared.error.first_recovered()
    }

    /// The stream's error, if it failed (device gone, backend error).
    pub fn error(&self) -> Option<String> {
        self.shared.error.get()
    }

    /// A handle another thread can wait on for frames (`FrameWaiter::wait`).
    pub fn waiter(&self) -> FrameWaiter {
        FrameWaiter(Arc::clone(&self.shared))
    }

    /// Stop capturing and release the device (idempotent).
    pub fn close(&mut self) {
        self.thread.close();
        self.waiter().release();
        loop_wake::ring(&self.wake, 0);
    }
}

/// Waits for captured frames from any thread, on every platform: what an event loop that
/// cannot watch a file descriptor (Windows' Proactor loop) uses instead of the socket.
pub struct FrameWaiter(Arc<CaptureShared>);

impl FrameWaiter {
    /// Wait up to `timeout` for frames to be queued (or for `release`); true if some are.
    pub fn wait(&self, timeout: Duration) -> bool {
        let shared = &self.0;
        let Ok(queue) = shared.frames.lock() else {
            return false;
        };
        let released = || shared.waiters_released.load(Ordering::Acquire);
        match shared
            .frames_ready
            .wait_timeout_while(queue, timeout, |q| q.is_empty() && !released())
        {
            Ok((queue, _)) => !queue.is_empty(),
            Err(_) => false,
        }
    }

    /// Make every `wait`, now and later, return at once (the stream is closing).
    pub fn release(&self) {
        self.0.waiters_released.store(true, Ordering::Release);
        // Under the lock: a waiter between its check and its wait cannot miss the notice.
        let _queue = self.0.frames.lock();
        self.0.frames_ready.notify_all();
    }
}

impl Drop for CaptureStream {
    fn drop(&mut self) {
        self.close();
    }
}

// --- playback ------------------------------------------------------------------------------------

/// Playback settings.
#[derive(Debug, Clone)]
pub struct PlaybackConfig {
    pub device: Option<String>,
    /// Rate of the audio pushed (24000 for the Live API).
    pub source_rate_hz: u32,
    pub period_ms: u32,
    /// Received audio to hold before playback starts (and after an underrun), counting what
    /// the resampler still holds back.
    pub prebuffer_ms: u32,
}

struct PlaybackShared {
    callbacks: AtomicU64,
    /// Nanoseconds since the clock base of the latest callback, and the buffer's played count
    /// after it: together they say when a pushed sample reached the device.
    last_callback_ns: AtomicU64,
    error: ErrorSlot,
}

/// A running output stream fed from a playout buffer.
pub struct PlaybackStream {
    writer: PlayoutWriter,
    resampler: Resampler,
    resampled: Vec<f32>,
    shared: Arc<PlaybackShared>,
    thread: StreamThread,
    clock_base: Instant,
    clock_offset_s: f64,
    pub device_rate: u32,
    pub device_channels: u16,
    pub period_frames: u32,
    /// The reading end of what the callback played, until a capture stream takes it.
    echo_samples: Mutex<Option<rtrb::Consumer<f32>>>,
}

fn build_playback<T>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    mut reader: PlayoutReader,
    shared: Arc<PlaybackShared>,
    clock_base: Instant,
    echo_tap: rtrb::Producer<f32>,
) -> Result<cpal::Stream, DeviceError>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = config.channels as usize;
    // Allocated here, before the stream starts; cpal's fixed periods never exceed it, and a
    // larger request would be served in pieces.
    let mut mono = vec![0f32; 16_384];
    let mut played = echo_tap;
    let errors = Arc::clone(&shared);
    device
        .build_output_stream::<T, _, _>(
            *config,
            move |data: &mut [T], _info: &cpal::OutputCallbackInfo| {
                for frames in data.chunks_mut(mono.len() * channels) {
                    let n = frames.len() / channels;
                    let scratch = &mut mono[..n];
                    reader.pull(scratch);
                    for (frame, value) in frames.chunks_exact_mut(channels).zip(scratch.iter()) {
                        frame.fill(T::from_sample(*value));
                    }
                    // What was played, for an echo canceller (dropped when nobody reads it).
                    write_fitting(&mut played, scratch.iter().copied());
                }
                let ns = clock_base.elapsed().as_nanos() as u64;
                shared.last_callback_ns.store(ns, Ordering::Release);
                shared.callbacks.fetch_add(1, Ordering::Relaxed);
            },
            move |err| errors.error.report(err),
            None,
        )
        .map_err(backend)
}

impl PlaybackStream {
    /// Open and start an output stream.
    ///
    /// # Errors
    /// No such device, an unsupported format, or a backend failure.
    pub fn open(config: &PlaybackConfig, clock_offset_s: f64) -> Result<Self, DeviceError> {
        let clock_base = Instant::now();
        let device = find_device(config.device.as_deref(), false)?;
        let supported = device.default_output_config().map_err(backend)?;
        let stream_config = stream_config(&supported, config.period_ms);
        let device_rate = stream_config.sample_rate;
        let period_frames = match stream_config.buffer_size {
            cpal::BufferSize::Fixed(n) => n,
            cpal::BufferSize::Default => 0,
        };
        let resampler = Resampler::new(config.source_rate_hz, device_rate, 1).map_err(|e| {
            DeviceError::UnsupportedFormat {
                reason: e.to_string(),
            }
        })?;
        // The prebuffer counts received audio: what the resampler still holds back is on its
        // way, so one 40 ms chunk starts a 40 ms prebuffer instead of waiting for the next.
        let withheld = resampler.delay_samples().ceil() as usize;
        let playout = PlayoutConfig {
            start_threshold: ((device_rate * config.prebuffer_ms / 1000) as usize)
                .saturating_sub(withheld),
            ..PlayoutConfig::for_rate(device_rate)
        };
        let (writer, reader) =
            playout_buffer(playout).map_err(|e| DeviceError::UnsupportedFormat {
                reason: e.to_string(),
            })?;
        let shared = Arc::new(PlaybackShared {
            callbacks: AtomicU64::new(0),
            last_callback_ns: AtomicU64::new(0),
            error: ErrorSlot::default(),
        });
        let format = supported.sample_format();
        let build_shared = Arc::clone(&shared);
        // One second of played audio for an echo canceller.
        let (echo_tap, echo_samples) = rtrb::RingBuffer::new(device_rate as usize);
        let thread = StreamThread::spawn(
            "geminilive-playback",
            Duration::from_millis(20),
            move || {
                let stream = for_sample_format!(
                    format,
                    build_playback(
                        &device,
                        &stream_config,
                        reader,
                        build_shared,
                        clock_base,
                        echo_tap
                    )
                )?;
                stream.play().map_err(backend)?;
                Ok(stream)
            },
            || {},
        )?;
        Ok(Self {
            writer,
            resampler,
            resampled: Vec::new(),
            shared,
            thread,
            clock_base,
            clock_offset_s,
            device_rate,
            device_channels: stream_config.channels,
            period_frames,
            echo_samples: Mutex::new(Some(echo_samples)),
        })
    }

    /// What this stream plays, from now on, for one capture stream's echo canceller (`None`
    /// once taken).
    pub fn echo_reference(&mut self) -> Option<EchoReference> {
        let mut samples = self.echo_samples.get_mut().ok()?.take()?;
        let stale = samples.slots();
        if let Ok(chunk) = samples.read_chunk(stale) {
            chunk.commit_all(); // what was played before anyone listened
        }
        Some(EchoReference {
            samples,
            device_rate: self.device_rate,
        })
    }

    /// Queue mono audio at the source rate (resampled to the device rate here, not in the
    /// callback). All or nothing.
    ///
    /// # Errors
    /// `Full` from the playout buffer; nothing is queued then (the resampler is rewound).
    pub fn push(&mut self, samples: &[f32]) -> Result<(), crate::jitter::PlayoutError> {
        let before = self.resampler.clone();
        self.resampled
            .resize(self.resampler.output_len_max(samples.len()), 0.0);
        let n = self
            .resampler
            .process_into(samples, &mut self.resampled)
            .unwrap_or(0);
        let result = self.writer.push(&self.resampled[..n]);
        if result.is_err() {
            self.resampler = before;
        }
        result
    }

    /// The turn is over: release the resampler's tail and play everything out.
    pub fn end_of_turn(&mut self) {
        let tail = self.resampler.flush();
        let _ = self.writer.push(&tail);
        self.writer.end_of_turn();
    }

    /// Barge-in: silence within one device period. Returns the device samples dropped.
    pub fn clear(&mut self) -> u64 {
        self.resampler.reset();
        self.writer.clear()
    }

    /// Duck or restore what plays (see [`PlayoutWriter::set_gain`]).
    ///
    /// # Errors
    /// `InvalidConfig` for a gain outside 0..=1.
    pub fn set_gain(&mut self, gain: f32) -> Result<(), crate::jitter::PlayoutError> {
        self.writer.set_gain(gain)
    }

    pub fn gain(&self) -> f32 {
        self.writer.gain()
    }

    pub fn stats(&self) -> PlayoutStats {
        self.writer.stats()
    }

    pub fn callbacks(&self) -> u64 {
        self.shared.callbacks.load(Ordering::Relaxed)
    }

    /// Under/overruns the backend reported and recovered from (audible gaps).
    pub fn xruns(&self) -> u64 {
        self.shared.error.xruns()
    }

    /// Other backend errors recovered from (no gap in the audio).
    pub fn stream_errors(&self) -> u64 {
        self.shared.error.recovered_errors()
    }

    /// The first error other than an xrun the stream recovered from, for diagnosis.
    pub fn first_stream_error(&self) -> Option<String> {
        self.shared.error.first_recovered()
    }

    /// When the latest callback ran, on the caller's clock.
    pub fn last_callback_s(&self) -> f64 {
        let ns = self.shared.last_callback_ns.load(Ordering::Acquire);
        let _ = self.clock_base;
        self.clock_offset_s + ns as f64 / 1e9
    }

    pub fn error(&self) -> Option<String> {
        self.shared.error.get()
    }

    /// Stop and release the device (idempotent).
    pub fn close(&mut self) {
        self.thread.close();
    }
}

impl Drop for PlaybackStream {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<CaptureStream>();
        assert_send::<PlaybackStream>();
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<FrameWaiter>();
    }

    #[test]
    fn frame_waiter_wakes_on_frames_and_on_release() {
        let shared = Arc::new(CaptureShared::new());
        let waiter = FrameWaiter(Arc::clone(&shared));
        assert!(
            !waiter.wait(Duration::from_millis(20)),
            "no frames: times out"
        );
        let producer = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                shared.frames.lock().unwrap().push_back(CapturedFrame {
                    samples: vec![0.0; 4],
                    timestamp_s: 0.0,
                    index: 0,
                });
                shared.frames_ready.notify_all();
            })
        };
        let started = Instant::now();
        assert!(waiter.wait(Duration::from_secs(10)), "woken by the frame");
        assert!(started.elapsed() < Duration::from_secs(5));
        producer.join().unwrap();
        shared.frames.lock().unwrap().clear();
        let releaser = {
            let waiter = FrameWaiter(Arc::clone(&shared));
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                waiter.release();
            })
        };
        let started = Instant::now();
        assert!(!waiter.wait(Duration::from_secs(10)), "released, no frames");
        assert!(started.elapsed() < Duration::from_secs(5));
        releaser.join().unwrap();
        assert!(
            !waiter.wait(Duration::from_secs(10)),
            "a released waiter stays released"
        );
    }

    #[test]
    fn unknown_device_is_a_clear_error() {
        let config = PlaybackConfig {
            device: Some("no-such-device-xyz".into()),
            source_rate_hz: 24_000,
            period_ms: 10,
            prebuffer_ms: 40,
        };
        match PlaybackStream::open(&config, 0.0) {
            Err(DeviceError::NoSuchDevice { name }) => assert_eq!(name, "no-such-device-xyz"),
            Err(DeviceError::Backend { .. }) => {} // no audio host at all on this machine
            other => panic!("unexpected: {:?}", other.err()),
        }
    }

    #[test]
    fn error_slot_keeps_the_first_message() {
        let slot = ErrorSlot::default();
        assert_eq!(slot.get(), None);
        slot.set("device gone".into());
        slot.set("later".into());
        assert_eq!(slot.get().as_deref(), Some("device gone"));
    }

    #[test]
    fn error_slot_counts_xruns_apart_and_keeps_the_first_recovered_error() {
        let slot = ErrorSlot::default();
        let delay_query = || {
            cpal::Error::with_message(cpal::ErrorKind::BackendError, "snd_pcm_avail_delay failed")
        };
        slot.report(cpal::Error::new(cpal::ErrorKind::Xrun));
        assert_eq!(
            slot.first_recovered(),
            None,
            "an xrun's message says nothing more"
        );
        slot.report(delay_query());
        slot.report(delay_query());
        assert_eq!((slot.xruns(), slot.recovered_errors()), (1, 2));
        assert!(slot
            .first_recovered()
            .is_some_and(|m| m.contains("snd_pcm_avail_delay")));
        assert_eq!(slot.get(), None, "recovered errors do not fail the stream");
        slot.report(cpal::Error::new(cpal::ErrorKind::DeviceNotAvailable));
        assert!(slot.get().is_some());
        assert_eq!((slot.xruns(), slot.recovered_errors()), (1, 2));
    }
}
