package cmdutil

import (
	"errors"

	"github.com/go-logr/logr"

	"github.com/konlease/konlease/lock"
)

// GetEach is get of several NAMEs, for every kind, as kubectl get does it:
// get each name; print those found, or an empty list when nothing was
// found and nothing failed; then report every failure at once (exit 1).
func GetEach[T any](names []string, get func(name string) (T, error), print func(items []T) error) error {
	var (
		items []T
		errs  []error
	)
	for _, name := range names {
		st, err := get(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		items = append(items, st)
	}
	if len(items) > 0 || len(errs) == 0 {
		if err := print(items); err != nil {
			return err
		}
	}
	if len(errs) > 0 {
		return &RuntimeError{Err: errors.Join(errs...)}
	}
	return nil
}

// DeleteEach is delete of several NAMEs, for every kind (noun: "mutex",
// "semaphore"): each is deleted on its own, saying what del reports it
// deleted; with ignoreNotFound one that does not exist is a success. A
// refusal (a held mutex without --force) is a refusal to delete, not the
// "not acquired" of lock and run: every failure is exit 1.
func DeleteEach(log logr.Logger, noun, namespace string, names []string, ignoreNotFound bool, del func(name string) (string, error)) error {
	var errs []error
	for _, name := range names {
		msg, err := del(name)
		switch {
		case err == nil:
			log.Info(msg)
		case ignoreNotFound && errors.Is(err, lock.ErrNotFound):
			log.V(1).Info(noun+" does not exist; nothing to delete", noun, Ref(namespace, name))
		default:
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return &RuntimeError{Err: errors.Join(errs...)}
	}
	return nil
}
