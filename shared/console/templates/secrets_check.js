// Checks secrets TOML with the server's own parser before the form sends it (nothing is kept):
// true when it is fine or empty; otherwise the field is marked and `say` gets where it is wrong.
async function secretsAreValid(field, say) {
  field.classList.remove('field-error');
  if (field.value === '') return true;
  const response = await fetch('/new/secrets-check', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ secrets: field.value }) });
  if (response.ok) return true;
  const answer = await response.json().catch(() => ({}));
  field.classList.add('field-error');
  say(answer.error || ('the secrets could not be checked: ' + response.status));
  return false;
}
