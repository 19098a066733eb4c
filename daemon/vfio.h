/* The vfio backend (vfio_ops, declared in device.h) and what only it can tell about a device
 * it opened. Including this header does not pull in any VFIO uapi. */
#pragma once

#include "device.h"

/* How vfio_ops.open reached the device: "iommufd" (cdev /dev/vfio/devices/vfioN bound to
 * /dev/iommu) or "legacy" (/dev/vfio/vfio container + /dev/vfio/GROUP). Only for handles that
 * vfio_ops.open returned; NULL gives "none". For `devices` listings and the startup log. */
const char *vfio_path_name(const struct device_handle *handle);
