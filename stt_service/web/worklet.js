// The microphone's samples, in the audio thread: 16-bit PCM blocks of `block` samples for the
// page to publish, each with its level (RMS, 0..1).
class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.block = options.processorOptions.block;
    this.buffer = new Int16Array(this.block);
    this.filled = 0;
    this.energy = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const x = Math.max(-1, Math.min(1, channel[i]));
      this.energy += x * x;
      this.buffer[this.filled++] = x < 0 ? x * 0x8000 : x * 0x7fff;
      if (this.filled === this.block) {
        const pcm = this.buffer;
        this.port.postMessage({ pcm, level: Math.sqrt(this.energy / this.block) }, [pcm.buffer]);
        this.buffer = new Int16Array(this.block);
        this.filled = 0;
        this.energy = 0;
      }
    }
    return true;
  }
}

registerProcessor("capture", Capture);
