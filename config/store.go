package config

import "errors"

// MaxMaxBindings bounds max_bindings: a cap meant to bound memory must not
// itself be unbounded.
const MaxMaxBindings = 1_000_000_000

// validateStoreLimits checks the bounds on what clients can make the store
// hold.
func (c *Config) validateStoreLimits() error {
	if c.MaxBindings < 0 || c.MaxBindings > MaxMaxBindings {
		return &Error{Key: "max_bindings", Err: errors.New("must be between 0 (the store's default) and 1000000000")}
	}
	return nil
}
