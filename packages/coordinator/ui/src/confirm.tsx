/**
 * The one confirmation step every action goes through: a modal <dialog>
 * (focus stays inside, Escape cancels), optionally with one number field.
 */
import { useEffect, useRef, useState } from 'preact/hooks';

export interface Action {
  title: string;
  body: string;
  confirmLabel: string;
  danger?: boolean;
  /** When set, the dialog asks for a number first (a weight). */
  number?: { label: string; initial: number; min: number; max: number };
  /** Does the work; resolves to the message shown afterwards. */
  run(value?: number): Promise<string>;
}

export function ConfirmDialog({ action, onDone }: { action: Action; onDone(result?: { ok: boolean; text: string }): void }) {
  const ref = useRef<HTMLDialogElement>(null);
  const [value, setValue] = useState(String(action.number?.initial ?? ''));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');

  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
  }, []);

  const submit = async (e: Event) => {
    e.preventDefault();
    let n: number | undefined;
    if (action.number) {
      n = Number(value);
      if (value.trim() === '' || !Number.isInteger(n) || n < action.number.min || n > action.number.max) {
        setError(`${action.number.label} must be a whole number from ${action.number.min} to ${action.number.max}.`);
        return;
      }
    }
    setBusy(true);
    try {
      onDone({ ok: true, text: await action.run(n) });
    } catch (err) {
      onDone({ ok: false, text: `${action.title} failed: ${(err as Error).message}` });
    }
  };

  return (
    <dialog ref={ref} class="confirm" aria-labelledby="confirm-title" onCancel={(e) => (busy ? e.preventDefault() : onDone())}>
      <form method="dialog" noValidate onSubmit={submit}>
        <h2 id="confirm-title">{action.title}</h2>
        <p>{action.body}</p>
        {action.number && (
          <p class="field">
            <label for="confirm-number">{action.number.label}</label>
            <input
              id="confirm-number"
              type="number"
              inputMode="numeric"
              min={action.number.min}
              max={action.number.max}
              value={value}
              autoFocus
              onInput={(e) => setValue((e.target as HTMLInputElement).value)}
              aria-invalid={error ? 'true' : undefined}
              aria-describedby={error ? 'confirm-error' : undefined}
            />
          </p>
        )}
        {error && (
          <p id="confirm-error" class="error-text" role="alert">
            {error}
          </p>
        )}
        <div class="dialog-buttons">
          <button type="button" class="button" onClick={() => onDone()} disabled={busy} autoFocus={!action.number}>
            Cancel
          </button>
          <button type="submit" class={action.danger ? 'button danger' : 'button primary'} disabled={busy}>
            {busy ? 'Working…' : action.confirmLabel}
          </button>
        </div>
      </form>
    </dialog>
  );
}
