export default function AdminPage(_: Record<string, unknown>) {
  return <h1>Admin</h1>;
}
