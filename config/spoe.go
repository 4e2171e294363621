package config

import (
	"errors"
	"fmt"
	"time"
)

// HAProxy keeps idle agent connections for reuse: 2.6 for `timeout idle`
// (30s in the generated SPOE file), 3.1+ in connection pools until the
// agents backend's `timeout server` (1m in the generated configuration;
// mux_spop arms it when no stream is attached). The agent must not close
// one HAProxy may still pick, so its idle timeout stays well above both.
const minSPOEIdleTimeout = 2 * time.Minute

// validateSPOELimits checks the SPOE port's bounds and max_ttl.
func (c *Config) validateSPOELimits() error {
	if c.SPOEMaxConnections < 1 || c.SPOEMaxConnections > 1_000_000 {
		return &Error{Key: "spoe_max_connections", Err: fmt.Errorf("%d: want 1 to 1000000", c.SPOEMaxConnections)}
	}
	if d := c.SPOEFrameTimeout.D(); d < time.Second || d > 10*time.Minute {
		return &Error{Key: "spoe_frame_timeout", Err: fmt.Errorf("%v: want 1s to 10m", d)}
	}
	if d := c.SPOEIdleTimeout.D(); d < minSPOEIdleTimeout {
		return &Error{Key: "spoe_idle_timeout", Err: fmt.Errorf("%v: want at least %v, above HAProxy's own idle limits on agent connections (timeout idle 30s, the agents backend's timeout server 1m)", d, minSPOEIdleTimeout)}
	}
	if c.MaxTTL <= 0 {
		return &Error{Key: "max_ttl", Err: errors.New("must be positive")}
	}
	if c.TTL > 0 && c.MaxTTL < c.TTL {
		return &Error{Key: "max_ttl", Err: fmt.Errorf("%v is below ttl (%v)", c.MaxTTL, c.TTL)}
	}
	return nil
}
