// Cached facts about the current CUDA device.
#pragma once

namespace mx8::cuda {

// Number of SMs of the current device (queried once per device).
int num_sms();
// True when a CUDA device is usable (driver present, at least one device); never throws.
bool device_available();

}  // namespace mx8::cuda
