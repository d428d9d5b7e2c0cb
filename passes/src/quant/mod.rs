//! Post-training quantization: calibration statistics, range methods, hardware profiles and
//! the choice of quantization parameters. STUB: being written.
