import streamlit as st

st.title("Hello from Runway")
st.write("This app was built from a git repository and deployed by Runway.")
greeting = st.secrets.get("greeting", "(no greeting in the secrets)")
st.metric("The secret greeting", greeting)
